"""Tool-use SFT data whose observations are real: generated questions, their code, run in the sandbox.

Each question has a known answer (computed here) that a small model cannot work out in its head:
modular powers, big products, sums of long lists, prime counts, digit sums of powers; ``addition``
(three-digit sums) is the compact set for the tiny demo model. The code that answers it runs in the
``python`` tool's sandboxed session, exactly as in ``qwen chat --tools``; a trace is kept only when
the cell ran cleanly and printed the known answer.

Trained on code questions alone, a model calls a tool for everything. So a share of the records
(``--mix``) teaches the other two choices, in equal numbers:

- *other tool*: a question in the domain of one of our own JSON tools (:data:`DOMAIN_TOOLS`: flights,
  e-mail, alarms, music, restaurants, parcels, world clock, hotels, cinema, sports, recipes, lights),
  listed with 0-3 other ones or, half the time, 0-1 and the code tool (at most 4
  tools, so that a record fits 768 tokens); the reply calls that tool with a JSON
  input. These tools are descriptions only (nothing runs them, as in the tool-use benchmark): the
  observation is a made-up JSON result, left out of the loss, and the final answer reads it back.
- *no tool*: a question that needs none (:mod:`qwen_cli.agent.plain_replies`: small talk, the meaning
  of a word, a simple fact, a plural or capitals or alphabetical order, a one-digit sum, everyday
  advice, a short rhyme, a sentence put into the past tense), listed with 1-4 tools that do not fit
  (or 1-2 and the code tool, half the time, never for the sums); the reply is a thought and
  ``Final Answer:`` with the known reply, no ``Action``.

    python -m qwen_cli.agent.traces --out DIR [--train N] [--test N] [--mix F] [--kinds K,...] [--compact] [--seed S]

writes, into a new ``DIR``:

- ``train.jsonl`` and ``test.jsonl``: ReAct records (``qwen_cli.data.react``, plus ``kind``: ``code``,
  ``tool`` or ``none``) for ``qwen sft``; ``--train`` and ``--test`` count records, of which
  ``round(F * N)`` per split are other-tool and no-tool records (``--mix``, default 0.5; 0 gives code
  questions only), the rest code questions. The code tool is named ``python`` or ``code_interpreter``
  (the benchmark's name) at random and listed with 0-2 of our other tools, so the model learns to
  pick it; half the records carry Qwen's system prompt (what the benchmarks send), half leave it to
  the SFT recipe's default. ``--compact``: only ``python``, the short prompt and short thoughts, for
  a 256-token window, code questions only (``--mix`` must be 0, its default there).
- ``code_interpreter.jsonl``: the test code questions with their answers, for
  ``qwen eval --tasks code-interpreter --data``; ``tool_use.jsonl``: all test records as tool-choice
  prompts and reference replies (no-tool ones are the negatives), for ``qwen eval --tasks tool-use --data``.

Questions are distinct across the two splits. The code questions depend only on ``--seed`` and the
code counts (the mixed records come from a random stream of their own), so ``--train 320 --test 80``
with the default mix holds the same 40 test code questions as ``--train 160 --test 40 --mix 0``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from qwen_cli.agent.plain_replies import REPLIES, Reply
from qwen_cli.agent.tools import PythonTool
from qwen_cli.data.chat_template import DEFAULT_SYSTEM
from qwen_cli.data.react import CODE_INTERPRETER_SPEC, TOOL_SPECS, ToolSpec, from_react
from qwen_cli.errors import UserError
from qwen_cli.fsutil import atomic_dir


@dataclass(frozen=True)
class Problem:
    """A question, the Python that answers it by printing, and the answer computed on the host."""

    question: str
    code: str
    answer: str


def _modpow(rng: random.Random) -> Problem:
    a, b, m = rng.randint(2, 999), rng.randint(20, 999), rng.randint(7, 997)
    return Problem(f"What is {a}**{b} mod {m}?", f"print(pow({a}, {b}, {m}))", str(pow(a, b, m)))


def _product(rng: random.Random) -> Problem:
    a, b = rng.randint(1000, 9_999_999), rng.randint(1000, 9_999_999)
    return Problem(f"What is {a} * {b}?", f"print({a} * {b})", str(a * b))


def _list_sum(rng: random.Random) -> Problem:
    values = [rng.randint(100, 99_999) for _ in range(rng.randint(6, 10))]
    listed = ", ".join(map(str, values[:-1])) + f" and {values[-1]}"
    return Problem(f"What is the sum of {listed}?", f"print(sum({values}))", str(sum(values)))


def _is_prime(n: int) -> bool:
    return n > 1 and all(n % d for d in range(2, int(n**0.5) + 1))


def _primes(rng: random.Random) -> Problem:
    n = rng.randint(100, 20_000)
    code = f"print(sum(all(n % d for d in range(2, int(n ** 0.5) + 1)) for n in range(2, {n})))"
    return Problem(f"How many prime numbers are there below {n}?", code, str(sum(map(_is_prime, range(n)))))


def _digit_sum(rng: random.Random) -> Problem:
    k = rng.randint(50, 2000)
    return Problem(f"What is the sum of the digits of 2**{k}?", f"print(sum(int(c) for c in str(2 ** {k})))",
                   str(sum(int(c) for c in str(2**k))))


def _addition(rng: random.Random) -> Problem:
    a, b = rng.randint(100, 999), rng.randint(100, 999)
    return Problem(f"What is {a} + {b}?", f"print({a}+{b})", str(a + b))


KINDS: dict[str, Callable[[random.Random], Problem]] = {
    "modpow": _modpow, "product": _product, "sum": _list_sum, "primes": _primes, "digits": _digit_sum,
    "addition": _addition}
FULL_KINDS = ("modpow", "product", "sum", "primes", "digits")
CODE_TOOLS = (TOOL_SPECS["python"], CODE_INTERPRETER_SPEC)


def _spec(name: str, human_name: str, description: str, **properties: str) -> ToolSpec:
    """A JSON tool whose arguments are the string ``properties`` (name: description), all required."""
    return ToolSpec(name, description, {"type": "object", "properties": {
        key: {"type": "string", "description": text} for key, text in properties.items()},
        "required": list(properties)}, human_name)


@dataclass(frozen=True)
class ToolQuestion:
    """A question for one of :data:`DOMAIN_TOOLS`: the call that answers it, a made-up result, the reply."""

    question: str
    arguments: dict
    result: dict
    answer: str


CITIES = ("Nairobi", "Lima", "Osaka", "Porto", "Krakow", "Seville", "Vancouver", "Adelaide", "Montreal",
          "Dublin", "Hanoi", "Cape Town", "Helsinki", "Bogota", "Edinburgh", "Marrakesh")
PEOPLE = ("Priya", "Tomas", "Aiko", "Bruno", "Fatima", "Lena", "Marco", "Sven", "Chloe", "Omar", "Ingrid", "Kofi")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _clock(rng: random.Random) -> str:
    return f"{rng.randint(5, 22):02d}:{rng.choice((0, 10, 15, 20, 30, 40, 45, 50)):02d}"


def _flights(rng: random.Random) -> ToolQuestion:
    a, b = rng.sample(CITIES, 2)
    day = rng.choice(DAYS)
    question = rng.choice((f"Find me a flight from {a} to {b} on {day}.",
                           f"Which flights go from {a} to {b} on {day}?",
                           f"I need to fly {a} to {b} on {day}. What are my options?"))
    departs, price = _clock(rng), rng.randint(60, 900)
    return ToolQuestion(question, {"origin": a, "destination": b, "day": day},
                        {"flights": [{"departs": departs, "price_eur": price}]},
                        f"There is a flight from {a} to {b} on {day} at {departs} for {price} EUR.")


def _email(rng: random.Random) -> ToolQuestion:
    who = rng.choice(PEOPLE)
    body = rng.choice(("the report is ready", "I will be ten minutes late", "lunch moves to one o'clock",
                       "the slides are in the shared folder", "the printer is fixed", "I got the tickets"))
    question = rng.choice((f"Send an email to {who} saying that {body}.", f"Email {who}: {body}.",
                           f"Please write {who} a mail that {body}."))
    return ToolQuestion(question, {"to": who, "body": body[0].upper() + body[1:] + "."},
                        {"status": "sent"}, f"Done, the email to {who} is sent.")


def _alarm(rng: random.Random) -> ToolQuestion:
    time = _clock(rng)
    question = rng.choice((f"Wake me up at {time} tomorrow.", f"Set an alarm for {time}.",
                           f"Ring at {time} so I don't oversleep."))
    return ToolQuestion(question, {"time": time}, {"alarm": time, "status": "set"}, f"Your alarm is set for {time}.")


def _music(rng: random.Random) -> ToolQuestion:
    artist = rng.choice(("Nina Simone", "Miles Davis", "ABBA", "Bob Marley", "Fela Kuti", "Bach",
                         "Ella Fitzgerald", "Buena Vista Social Club", "Chopin", "Fleetwood Mac"))
    question = rng.choice((f"Play some {artist}.", f"Put on music by {artist}.",
                           f"I'd like to listen to {artist} now."))
    return ToolQuestion(question, {"query": artist}, {"now_playing": f"{artist}: greatest hits"},
                        f"Now playing {artist}.")


def _restaurants(rng: random.Random) -> ToolQuestion:
    cuisine = rng.choice(("Thai", "Ethiopian", "Mexican", "Korean", "vegan", "Lebanese", "Georgian", "Peruvian"))
    place = rng.choice(("the central station", "my hotel", "the old town", "the university", *CITIES))
    name = f"{rng.choice(('Casa', 'Little', 'Golden', 'Blue'))} {rng.choice(('Lotus', 'Garden', 'Table', 'Spoon'))}"
    rating = rng.randint(38, 49) / 10
    question = rng.choice((f"Where can I get {cuisine} food near {place}?", f"Find a {cuisine} restaurant near {place}.",
                           f"Any good {cuisine} places around {place}?"))
    return ToolQuestion(question, {"cuisine": cuisine, "near": place}, {"results": [{"name": name, "rating": rating}]},
                        f"Try {name}, rated {rating}.")


def _parcel(rng: random.Random) -> ToolQuestion:
    number = f"{rng.choice(('ZX', 'QP', 'LK'))}{rng.randint(10_000_000, 99_999_999)}"
    city, days = rng.choice(CITIES), rng.randint(1, 5)
    question = rng.choice((f"Where is my parcel {number}?", f"Has package {number} been delivered yet?",
                           f"Track shipment {number} for me."))
    return ToolQuestion(question, {"tracking_number": number},
                        {"status": "in transit", "last_seen": city, "days_left": days},
                        f"Parcel {number} is in transit, last seen in {city}, {days} day(s) to go.")


def _world_clock(rng: random.Random) -> ToolQuestion:
    city, time = rng.choice(CITIES), _clock(rng)
    question = rng.choice((f"What time is it in {city} at the moment?", f"What's the local time in {city}?",
                           f"Is it morning or evening in {city} now?"))
    return ToolQuestion(question, {"city": city}, {"local_time": time}, f"It is {time} in {city}.")


def _hotels(rng: random.Random) -> ToolQuestion:
    city, nights, day = rng.choice(CITIES), rng.randint(1, 7), rng.choice(DAYS)
    price = rng.randint(45, 320)
    question = rng.choice((f"Find a hotel room in {city} for {nights} nights from {day}.",
                           f"I need somewhere to sleep in {city} from {day}, {nights} nights."))
    return ToolQuestion(question, {"city": city, "check_in": day, "nights": str(nights)},
                        {"hotels": [{"name": f"Hotel {city} Centre", "eur_per_night": price}]},
                        f"Hotel {city} Centre has a room for {price} EUR a night.")


def _cinema(rng: random.Random) -> ToolQuestion:
    film = rng.choice(("The Last Harbour", "Paper Moons", "Night Train to Riga", "Blue Orchard", "Ten Quiet Rooms",
                       "The Salt Road"))
    city, times = rng.choice(CITIES), sorted(_clock(rng) for _ in range(2))
    question = rng.choice((f"When is {film} showing in {city} tonight?", f"Which cinemas in {city} play {film}?",
                           f"Showtimes for {film} in {city}, please."))
    return ToolQuestion(question, {"film": film, "city": city}, {"showtimes": times},
                        f"{film} shows in {city} at {times[0]} and {times[1]}.")


def _sports(rng: random.Random) -> ToolQuestion:
    team = rng.choice(("the Lions", "FC Harbour", "the Comets", "Riverside United", "the Falcons", "Northern Stars"))
    us, them = rng.randint(0, 5), rng.randint(0, 5)
    question = rng.choice((f"How did {team} do in their last match?", f"What was the score of {team}'s last game?",
                           f"Did {team} win yesterday?"))
    return ToolQuestion(question, {"team": team}, {"last_game": {"for": us, "against": them}},
                        f"{team[0].upper() + team[1:]} played {us}-{them} in their last game.")


def _recipes(rng: random.Random) -> ToolQuestion:
    dish = rng.choice(("lentil soup", "banana bread", "paella", "pad thai", "shakshuka", "apple crumble", "falafel"))
    minutes = rng.randint(20, 90)
    question = rng.choice((f"Find me a recipe for {dish}.", f"I want to cook {dish} tonight, got a recipe?",
                           f"Look up a {dish} recipe."))
    return ToolQuestion(question, {"dish": dish}, {"title": f"Easy {dish}", "minutes": minutes},
                        f"Here is one: Easy {dish}, ready in {minutes} minutes.")


def _lights(rng: random.Random) -> ToolQuestion:
    room, state = rng.choice(("kitchen", "living room", "bedroom", "hallway", "garage", "office")), rng.choice(("on", "off"))
    question = rng.choice((f"Turn the {room} lights {state}.", f"Switch {state} the light in the {room}.",
                           f"Can you put the {room} lights {state}?"))
    return ToolQuestion(question, {"room": room, "state": state}, {"room": room, "lights": state},
                        f"The {room} lights are {state}.")


# our own tools for the other-tool records and as distractors: (spec, the thought that picks it, questions)
DOMAIN_TOOLS: tuple[tuple[ToolSpec, str, Callable[[random.Random], ToolQuestion]], ...] = (
    (_spec("flight_search", "Flight search", "Finds flights between two cities on a given day, with prices.",
           origin="departure city", destination="arrival city", day="day of travel"),
     "I need to search for flights.", _flights),
    (_spec("send_email", "E-mail", "Sends an e-mail message to one of the user's contacts.",
           to="the contact's name", body="the message"),
     "The user wants to send an e-mail.", _email),
    (_spec("set_alarm", "Alarm clock", "Sets an alarm on the user's phone for a time of day.",
           time="HH:MM, 24-hour clock"),
     "I should set an alarm.", _alarm),
    (_spec("play_music", "Music player", "Plays songs by an artist, an album or a playlist.",
           query="artist, album or playlist"),
     "The user wants to hear music.", _music),
    (_spec("find_restaurant", "Restaurant finder", "Finds restaurants of a cuisine near a place, with ratings.",
           cuisine="kind of food", near="place or area"),
     "I should look for restaurants nearby.", _restaurants),
    (_spec("track_parcel", "Parcel tracking", "Shows where a parcel is from its tracking number.",
           tracking_number="the parcel's tracking number"),
     "I need the parcel's tracking status.", _parcel),
    (_spec("world_clock", "World clock", "Tells the current local time in any city.", city="city name"),
     "I need the local time there.", _world_clock),
    (_spec("hotel_search", "Hotel search", "Finds hotel rooms in a city for given dates, with prices.",
           city="city name", check_in="first night", nights="number of nights"),
     "I should search for a hotel.", _hotels),
    (_spec("cinema_times", "Cinema listings", "Showtimes of a film at the cinemas of a city.",
           film="film title", city="city name"),
     "I need the film's showtimes.", _cinema),
    (_spec("sports_scores", "Sports results", "Latest results and scores of a sports team.", team="team name"),
     "I should check the team's latest result.", _sports),
    (_spec("recipe_search", "Recipe search", "Finds cooking recipes for a dish, with cooking times.",
           dish="name of the dish"),
     "I should look up a recipe.", _recipes),
    (_spec("smart_lights", "Smart home lights", "Switches the lights of a room in the user's home on or off.",
           room="room name", state="on or off"),
     "I should switch the lights.", _lights),
)
OTHER_TOOLS = tuple(spec for spec, _, _ in DOMAIN_TOOLS)
THOUGHT = "I should compute this exactly with Python."


def problems(kinds: Sequence[str], count: int, rng: random.Random) -> list[Problem]:
    """``count`` problems with distinct questions, kinds drawn in turn from ``kinds``."""
    found: dict[str, Problem] = {}
    tries = 0
    while len(found) < count:
        tries += 1
        if tries > 100 * count:
            raise UserError(f"only {len(found)} distinct questions of {', '.join(kinds)} found; ask for fewer")
        problem = KINDS[kinds[len(found) % len(kinds)]](rng)
        found.setdefault(problem.question, problem)
    return list(found.values())


def record(problem: Problem, compact: bool, rng: random.Random) -> dict:
    """The ReAct record of one problem (see the module docstring for the two styles), its observation empty."""
    if compact:
        return {"question": problem.question, "tools": ["python"], "compact": True, "final_thought": "done",
                "steps": [{"thought": "use python", "action": "python", "action_input": problem.code,
                           "observation": ""}], "final_answer": problem.answer}
    code_tool = rng.choice(CODE_TOOLS)
    tools = [code_tool, *rng.sample(OTHER_TOOLS, rng.randint(0, 2))]
    rng.shuffle(tools)
    trace = {"kind": "code", "question": problem.question, "tools": [asdict(t) for t in tools],
             "steps": [{"thought": THOUGHT, "action": code_tool.name, "action_input": f"```py\n{problem.code}\n```",
                        "observation": ""}], "final_answer": problem.answer}
    return _system(trace, rng)


def _system(trace: dict, rng: random.Random) -> dict:
    return {"system": DEFAULT_SYSTEM, **trace} if rng.random() < 0.5 else trace


def tool_record(rng: random.Random) -> dict:
    """An other-tool record: a question for one of :data:`DOMAIN_TOOLS`, answered by calling it."""
    spec, thought, ask = rng.choice(DOMAIN_TOOLS)
    item = ask(rng)
    with_code = rng.random() < 0.5  # then at most 3 tools: the code tool's description is long
    tools = [spec, *rng.sample([t for t in OTHER_TOOLS if t is not spec], rng.randint(0, 1 if with_code else 3))]
    if with_code:
        tools.append(rng.choice(CODE_TOOLS))
    rng.shuffle(tools)
    return _system({"kind": "tool", "question": item.question, "tools": [asdict(t) for t in tools],
                    "steps": [{"thought": thought, "action": spec.name,
                               "action_input": json.dumps(item.arguments, ensure_ascii=False),
                               "observation": json.dumps(item.result, ensure_ascii=False)}],
                    "final_answer": item.answer}, rng)


def plain_record(reply: Reply, rng: random.Random) -> dict:
    """A no-tool record: ``reply``'s question with 1-4 tools that do not fit, answered without an Action."""
    with_code = not reply.arithmetic and rng.random() < 0.5
    tools = rng.sample(OTHER_TOOLS, rng.randint(1, 2 if with_code else 4))
    if with_code:
        tools.insert(rng.randint(0, len(tools)), rng.choice(CODE_TOOLS))
    return _system({"kind": "none", "question": reply.question, "tools": [asdict(t) for t in tools], "steps": [],
                    "final_thought": reply.thought, "final_answer": reply.answer}, rng)


def mixed_records(count: int, rng: random.Random, taken: set[str] = frozenset()) -> list[dict]:
    """``count`` other-tool and no-tool records in turn (other-tool first), questions distinct from each
    other and from ``taken``."""
    found: dict[str, dict] = {}
    tries = 0
    while len(found) < count:
        tries += 1
        if tries > 100 * count:
            raise UserError(f"only {len(found)} distinct other-tool and no-tool questions found; lower --mix")
        trace = tool_record(rng) if len(found) % 2 == 0 else plain_record(rng.choice(REPLIES)(rng), rng)
        if trace["question"] not in taken:
            found.setdefault(trace["question"], trace)
    return list(found.values())


def split_counts(train: int, test: int, mix: float) -> tuple[int, int, int, int]:
    """(code train, code test, mixed train, mixed test) records for ``--train``, ``--test``, ``--mix``."""
    mixed_train, mixed_test = round(mix * train), round(mix * test)
    return train - mixed_train, test - mixed_test, mixed_train, mixed_test


def solve(problem: Problem, compact: bool, rng: random.Random) -> dict | None:
    """The problem's record with the observation of its Action Input run in a fresh sandboxed session,
    or None when the cell failed or did not print the answer."""
    trace = record(problem, compact, rng)
    step = trace["steps"][0]
    tool = PythonTool()
    try:
        observation = tool.call(step["action_input"])
    finally:
        tool.close()
    if observation.error or observation.text.strip() != problem.answer:
        return None
    step["observation"] = observation.text
    return trace


def benchmark_files(test: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """The test code records as ``code-interpreter`` questions, and all test records as ``tool-use``
    prompts with reference replies."""
    questions = [{"query": r["question"], "tags": "math", "answer": r["final_answer"]} for r in test
                 if r.get("kind", "code") == "code"]
    tool_use = []
    for r in test:
        user, assistant = from_react(r)[-2:]
        tool_use.append({"prompt": user["content"], "response": assistant["content"]})
    return questions, tool_use


def write(out: Path, train: list[dict], test: list[dict], compact: bool) -> None:
    """``out`` with every file of the module docstring, complete or not at all."""
    files = {"train.jsonl": train, "test.jsonl": test}
    if not compact:
        files["code_interpreter.jsonl"], files["tool_use.jsonl"] = benchmark_files(test)
    with atomic_dir(out, overwrite=False) as tmp:
        for name, rows in files.items():
            (tmp / name).write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qwen_cli.agent.traces", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="new output directory")
    parser.add_argument("--train", type=int, default=200, help="training records (default 200)")
    parser.add_argument("--test", type=int, default=40, help="held-out records (default 40)")
    parser.add_argument("--mix", type=float, default=None,
                        help="share of each split that are other-tool and no-tool records, half each "
                             "(default 0.5; --compact: 0, the only value it takes)")
    parser.add_argument("--kinds", default=None, help=f"comma list of {', '.join(KINDS)} "
                        f"(default: {','.join(FULL_KINDS)}; --compact: addition)")
    parser.add_argument("--compact", action="store_true", help="short prompt and thoughts (tiny models)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    kinds = (args.kinds or ("addition" if args.compact else ",".join(FULL_KINDS))).split(",")
    mix = (0.0 if args.compact else 0.5) if args.mix is None else args.mix
    try:
        if unknown := [k for k in kinds if k not in KINDS]:
            raise UserError(f"--kinds: unknown kind {unknown[0]!r} (choose among {', '.join(KINDS)})")
        if args.train < 1 or args.test < 0:
            raise UserError("--train must be at least 1 and --test at least 0")
        if not 0 <= mix < 1:
            raise UserError(f"--mix must be at least 0 and below 1, not {mix}")
        if args.compact and mix:
            raise UserError("--mix: --compact traces are code questions only (--mix 0)")
        code_train, code_test, mixed_train, mixed_test = split_counts(args.train, args.test, mix)
        if code_train < 1:
            raise UserError(f"--mix {mix} leaves no code question among {args.train} training records")
        if args.out.exists():
            raise UserError(f"--out {args.out}: already exists")
        rng = random.Random(args.seed)
        wanted = problems(kinds, code_train + code_test, rng)
        solved = [(problem, solve(problem, args.compact, rng)) for problem in wanted]
        records = [trace for _, trace in solved if trace is not None]
        dropped = [problem.question for problem, trace in solved if trace is None]
        if dropped:
            print(f"dropped {len(dropped)} traces whose observation was not the answer, e.g. {dropped[0]!r}",
                  file=sys.stderr)
        n_test = round(len(records) * code_test / (code_train + code_test))
        mix_rng = random.Random(f"{args.seed}:mix")  # its own stream: the code questions do not depend on --mix
        mixed = mixed_records(mixed_train + mixed_test, mix_rng, {p.question for p in wanted})
        train, test = records[n_test:] + mixed[mixed_test:], records[:n_test] + mixed[:mixed_test]
        mix_rng.shuffle(train)
        write(args.out, train, test, args.compact)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(train)} train + {len(test)} test traces ({len(dropped)} dropped), {len(mixed)} of them "
          f"other-tool or no-tool -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
