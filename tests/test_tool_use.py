"""Tool-use scoring (report Table 6) is blind to what Qwen's evaluation ignores: the case of a tool's
name and the order of the keys in its JSON input; and it still sees a wrong tool or a wrong value."""

from __future__ import annotations

import pytest

from qwen_cli.evaluation.agent.tool_use import ToolUseItem, normalise_input, score_reply

REFERENCE = ('Thought: I need the exchange rate.\nAction: currency_convert\n'
             'Action Input: {"amount": 20, "from": "EUR", "to": "JPY"}\nObservation: 3200\n'
             'Thought: done.\nFinal Answer: 3200 yen.')
ITEM = ToolUseItem("Convert 20 euros to yen.", REFERENCE)


def score(reply: str) -> dict:
    return score_reply(ITEM, reply, list)  # characters as tokens: any change of the text changes Rouge-L


def test_tool_name_case_and_json_key_order_do_not_change_the_score():
    same = score('Action: Currency_Convert\nAction Input: {"to": "JPY", "amount": 20, "from": "EUR"}')
    assert same["correct_tool"] and same["rouge_l"] == 1.0
    spaced = score("Action:  CURRENCY_CONVERT \nAction Input: {'from': 'EUR', 'to': 'JPY', 'amount': 20}")
    assert spaced["correct_tool"] and spaced["rouge_l"] == 1.0


@pytest.mark.parametrize(("reply", "tool", "perfect"), [
    ('Action: currency_rate\nAction Input: {"amount": 20, "from": "EUR", "to": "JPY"}', False, True),
    ('Action: currency_convert\nAction Input: {"amount": 20, "from": "EUR", "to": "USD"}', True, False),
    ('Action: currency_convert\nAction Input: {"amount": 20, "from": "EUR"}', True, False),
])
def test_a_wrong_tool_or_a_wrong_input_still_counts(reply, tool, perfect):
    result = score(reply)
    assert result["correct_tool"] is tool
    assert (result["rouge_l"] == 1.0) is perfect


def test_inputs_are_normalised_to_sorted_json():
    assert normalise_input('{"b": 1, "a": [2, {"d": 3, "c": 4}]}') == '{"a": [2, {"c": 4, "d": 3}], "b": 1}'
    assert normalise_input("{'b': True, 'a': None}") == '{"a": null, "b": true}'
    assert normalise_input("not json") == ""
