"""Questions that need no tool, with their known replies: the *no tool* records of the ReAct traces
(:mod:`qwen_cli.agent.traces`). Each kind draws one question from a table or a template; the reply is
a thought that says why no tool is needed and a ``Final Answer``."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

GREETINGS = (("Hi there!", "Hi! What can I do for you?"), ("Good morning!", "Good morning! How can I help?"),
             ("Hey, nice to meet you.", "Nice to meet you too! What can I do for you?"),
             ("Thanks a lot, that was helpful.", "You're welcome, glad it helped."),
             ("Good evening, assistant.", "Good evening! What can I help you with?"),
             ("What's your name?", "I'm an AI assistant."), ("Thank you!", "You're welcome!"),
             ("Bye for now!", "Goodbye, have a nice day!"), ("Hello, can you hear me?", "Yes, I'm here. How can I help?"),
             ("Good night!", "Good night, sleep well!"), ("Hey! What's up?", "Not much, I'm here to help. What do you need?"),
             ("Nice to see you again.", "Nice to see you too! What can I do for you?"),
             ("Are you a robot?", "I'm an AI assistant, a computer program."), ("Can you help me?", "Of course! What do you need?"),
             ("I'm back.", "Welcome back! How can I help?"), ("Cheers, see you later!", "See you later!"))
WORDS = (("enormous", "very large"), ("ancient", "very old, from long ago"), ("rapid", "very fast"),
         ("fragile", "easily broken"), ("generous", "happy to give more than is expected"),
         ("humid", "damp, with a lot of water in the air"), ("brave", "ready to face danger without fear"),
         ("vacant", "empty, not in use"), ("timid", "shy and easily frightened"), ("fatigue", "great tiredness"),
         ("synonym", "a word with the same meaning as another word"),
         ("antonym", "a word with the opposite meaning of another word"), ("herbivore", "an animal that eats only plants"),
         ("noun", "a word that names a person, place or thing"), ("verb", "a word for an action or a state"),
         ("galaxy", "a huge system of stars held together by gravity"),
         ("peninsula", "a piece of land almost surrounded by water"), ("glacier", "a slowly moving mass of ice"),
         ("nocturnal", "active at night"), ("punctual", "on time"))
FACTS = (("How many days are there in a week?", "There are 7 days in a week."),
         ("How many legs does a spider have?", "A spider has 8 legs."),
         ("What is the opposite of cold?", "The opposite of cold is hot."),
         ("Which planet do we live on?", "We live on Earth."),
         ("At what temperature in Celsius does water freeze?", "Water freezes at 0 degrees Celsius."),
         ("How many minutes are in an hour?", "There are 60 minutes in an hour."),
         ("What colour is grass?", "Grass is green."), ("How many months does a year have?", "A year has 12 months."),
         ("What do bees make?", "Bees make honey."),
         ("Which letter comes first in the English alphabet?", "The letter A comes first."),
         ("How many sides does a triangle have?", "A triangle has 3 sides."),
         ("Which season comes after winter?", "Spring comes after winter."),
         ("What is frozen water called?", "Frozen water is called ice."),
         ("How many hours does a day have?", "A day has 24 hours."),
         ("What do you call a baby cat?", "A baby cat is called a kitten."),
         ("How many wheels does a bicycle have?", "A bicycle has 2 wheels."),
         ("What is the capital of Italy?", "The capital of Italy is Rome."),
         ("Which language is spoken in Brazil?", "Portuguese is spoken in Brazil."),
         ("How many continents are there?", "There are 7 continents."),
         ("What is the opposite of up?", "The opposite of up is down."))
PLURALS = (("mouse", "mice"), ("child", "children"), ("foot", "feet"), ("tooth", "teeth"), ("goose", "geese"),
           ("woman", "women"), ("leaf", "leaves"), ("knife", "knives"), ("box", "boxes"), ("city", "cities"),
           ("sheep", "sheep"), ("person", "people"), ("wolf", "wolves"), ("baby", "babies"), ("bus", "buses"))
SHORT_WORDS = ("apple", "river", "candle", "zebra", "mango", "pencil", "violin", "garden", "tiger", "window",
               "bridge", "lemon", "rocket", "forest", "cloud", "harbor")


@dataclass(frozen=True)
class Reply:
    """A question that needs no tool, the thought that says so, and its known reply."""

    question: str
    thought: str
    answer: str
    arithmetic: bool = False  # never offered the code tool


def _greeting(rng: random.Random) -> Reply:
    question, answer = rng.choice(GREETINGS)
    return Reply(question, "The user is just being friendly; I reply without a tool.", answer)


def _meaning(rng: random.Random) -> Reply:
    i = rng.randrange(len(WORDS))
    word, meaning = WORDS[i]
    question = (f"What does '{word}' mean?", f"Define the word '{word}'.", f"What is the meaning of '{word}'?")[i % 3]
    return Reply(question, "I know what this word means; no tool call is required.", f"'{word}' means {meaning}.")


def _fact(rng: random.Random) -> Reply:
    question, answer = rng.choice(FACTS)
    return Reply(question, "This is common knowledge; no tool call is required.", answer)


def _wording(rng: random.Random) -> Reply:
    thought = "I can do this with the words given; no tool call is required."
    form = rng.randrange(3)
    if form == 0:
        word, plural = rng.choice(PLURALS)
        return Reply(f"What is the plural of '{word}'?", thought, f"The plural of '{word}' is '{plural}'.")
    words = rng.sample(SHORT_WORDS, 2 if form == 1 else 3)
    if form == 1:
        return Reply(f"Write '{' '.join(words)}' in capital letters.", thought, " ".join(words).upper())
    return Reply(f"Put these words in alphabetical order: {', '.join(words)}.", thought, ", ".join(sorted(words)))


def _small_sum(rng: random.Random) -> Reply:
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    word, value = rng.choice((("plus", a + b), ("times", a * b)))
    return Reply(f"What is {a} {word} {b}?", "These numbers are small enough to work out in my head.",
                 f"{a} {word} {b} is {value}.", arithmetic=True)


ADVICE = (("studying for an exam", ("Study a little every day", "test yourself instead of rereading your notes",
                                     "take short breaks")),
          ("saving money", ("Track what you spend", "put aside a fixed amount each month", "cook at home more often")),
          ("staying focused at work", ("Turn off notifications", "work on one task at a time",
                                       "take a short walk every hour")),
          ("learning a new language", ("Practise for a few minutes every day", "listen to native speakers",
                                       "do not be afraid of making mistakes")),
          ("keeping houseplants alive", ("Do not overwater them", "give them enough light",
                                         "use pots with drainage holes")),
          ("running your first 5 km", ("Start slowly", "run three times a week", "rest between runs")),
          ("writing a clear e-mail", ("Keep it short", "put the main point first", "check the spelling before sending")),
          ("making new friends", ("Join a club or a class", "ask people about themselves", "keep in touch")),
          ("drinking more water", ("Carry a bottle with you", "drink a glass with every meal", "set reminders")),
          ("preparing for a job interview", ("Read about the company", "practise your answers aloud",
                                             "arrive a little early")))
VERSES = (("the sea", "The waves roll in and slip away,\nthe sea keeps time by night and day."),
          ("a rainy day", "The rain taps softly on the pane,\nthe street shines silver in the lane."),
          ("the moon", "The moon climbs high above the hill,\nthe night is silver, calm and still."),
          ("a city at night", "The city hums beneath its lights,\nawake through all the quiet nights."),
          ("a cup of coffee", "A cup of coffee, dark and warm,\na little harbour in the storm."),
          ("a snowy morning", "The snow has fallen, soft and white,\nthe world is hushed in morning light."),
          ("a sunrise", "The sun comes up in gold and red,\nand wakes the sleepy town from bed."),
          ("an old tree", "The old tree stands through wind and rain,\nits roots hold fast, its leaves remain."),
          ("a train journey", "The train runs on through field and town,\nthe hills roll up, the hills roll down."),
          ("a lazy cat", "The cat curls up upon the chair,\nand dreams of mice without a care."))
# (present, past) of one verb and what follows it, for "rewrite in the past tense"
TENSES = (("walk", "walked", "to the park"), ("play", "played", "football after school"),
          ("cook", "cooked", "dinner for the family"), ("visit", "visited", "the museum"),
          ("watch", "watched", "a film"), ("clean", "cleaned", "the kitchen"), ("paint", "painted", "the fence"),
          ("open", "opened", "the window"), ("call", "called", "my grandmother"), ("finish", "finished", "the report"))
SUBJECTS = (("I", False), ("We", False), ("They", False), ("She", True), ("He", True), ("My brother", True))


def _advice(rng: random.Random) -> Reply:
    topic, tips = rng.choice(ADVICE)
    form = rng.randrange(4)
    if form < 2:  # as many tips as asked for
        question, tips = f"Give me {('two', 'three')[form]} tips for {topic}.", tips[: form + 2]
    else:
        question = (f"Any advice on {topic}?", f"What should I keep in mind when {topic}?")[form - 2]
    return Reply(question, "This asks for general advice I can give myself; no tool call is required.",
                 "; ".join(tips) + ".")


def _verse(rng: random.Random) -> Reply:
    topic, verse = rng.choice(VERSES)
    question = (f"Write a short rhyme about {topic}.", f"Write two lines of verse about {topic}.",
                f"Compose a rhyming couplet about {topic}.")[rng.randrange(3)]
    return Reply(question, "This is creative writing; I write it myself, no tool call is required.", verse)


def _past_tense(rng: random.Random) -> Reply:
    present, past, rest = rng.choice(TENSES)
    subject, third_person = rng.choice(SUBJECTS)
    verb = present + ("es" if present.endswith(("sh", "ch")) else "s") if third_person else present
    question = (f"Rewrite in the past tense: {subject} {verb} {rest}.",
                f"Put this sentence into the past tense: {subject} {verb} {rest}.")[rng.randrange(2)]
    return Reply(question, "I can rewrite the given sentence myself; no tool call is required.",
                 f"{subject} {past} {rest}.")


REPLIES: tuple[Callable[[random.Random], Reply], ...] = (_greeting, _meaning, _fact, _wording, _small_sum, _advice,
                                                         _verse, _past_tense)
