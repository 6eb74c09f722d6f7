"""Lesson 10: predict which slider setting keeps exactly N tokens, then set it; checked from the playground's state.

The checks read what the playground shows (its prompt, its settings and the model's logits for that prompt)
and recompute the filtered distribution with `lmlab.widgets.next_token_view`, the function behind the chart.
"""

from lmlab.exercise_bank._properties import Failed, require, run
from lmlab.exercises import CheckResult, register
from lmlab.widgets import next_token_view

WINDOW = "ROMEO:\nBut soft, what light through yonder window"
_SLIDER = {"top_k": "top-k", "top_p": "top-p", "min_p": "min-p"}  # the names the sliders show


def _state(pg):
    """The playground's prompt, settings and logits, or a failure that says what was given instead."""
    if not all(hasattr(pg, name) for name in ("settings", "logits", "prompt")):
        raise Failed(f"expected the playground itself (an lmlab.widgets.Playground), got {type(pg).__name__}",
                     "not a playground")
    return pg.prompt.value, pg.settings(), pg.logits


def _require_prompt(prompt, wanted):
    require(prompt == wanted, f"the playground's prompt is {prompt!r}; this exercise is about {wanted!r}: set it "
            f"back with playground.set(prompt=...)", "other prompt")


def _require_sampling(settings, temperature, only):
    require(settings["strategy"] == "sample", f"the strategy is {settings['strategy']!r}; the filters act when "
            f"it is 'sample'", "strategy")
    require(settings["temperature"] == temperature, f"the temperature is {settings['temperature']:g}; this "
            f"exercise keeps it at {temperature:g}", "temperature")
    others = [_SLIDER[name] for name in _SLIDER if name != only and settings[name] is not None]
    require(not others, f"{' and '.join(others)} {'is' if len(others) == 1 else 'are'} on; leave only "
            f"{_SLIDER[only]} on (top-k 0, top-p 1 and min-p 0 mean off)", "other filters on")
    require(settings[only] is not None, f"{_SLIDER[only]} is off; the exercise asks which {_SLIDER[only]} keeps "
            f"the tokens", "filter off")


def _kept(logits, settings):
    view = next_token_view(logits, "sample", settings["temperature"], settings["top_k"], settings["top_p"],
                           settings["min_p"])
    return int(view.num_kept[0])


def _exactly(pg, prompt, temperature, only, n):
    shown, settings, logits = _state(pg)
    _require_prompt(shown, prompt)
    _require_sampling(settings, temperature, only)
    kept = _kept(logits, settings)
    require(kept == n, f"{_SLIDER[only]} {settings[only]:g} keeps {kept} token{'s' * (kept != 1)} here, not {n}",
            "wrong count")
    return CheckResult(True, f"✅ Correct — {_SLIDER[only]} {settings[only]:g} keeps exactly {n} tokens")


register("10.top_p_keeps_5", run(lambda pg: _exactly(pg, WINDOW, 1.0, "top_p", 5)),
         hints=("Top-p keeps the smallest set of most probable tokens whose mass reaches p. Read the bars of the "
                "chart from the tallest down and add them up.",
                "Exactly 5 tokens are kept when p is larger than the mass of the 4 most probable tokens (or 4 would "
                "be enough) and at most the mass of the 5 most probable.",
                "playground.view.probs[0].sort(descending=True).values.cumsum(0)[:5] gives the masses of the top "
                "1, 2, ..., 5 tokens; pick a top-p on the slider's 0.01 grid above the 4th and not above the 5th, "
                "and set it with playground.set(temperature=1.0, top_k=0, min_p=0.0, top_p=...)."))

register("10.min_p_keeps_3", run(lambda pg: _exactly(pg, WINDOW, 1.5, "min_p", 3)),
         hints=("Min-p keeps every token at least min-p times as probable as the best one, and it measures the "
                "distribution after the temperature. Heat it to 1.5 first, then read the bars as ratios to the "
                "tallest.",
                "Exactly 3 tokens survive when min-p is at most the 3rd token's probability divided by the "
                "best one's, and above the 4th token's ratio.",
                "probs = (playground.logits / 1.5).softmax(-1)[0].sort(descending=True).values; ratios = probs / "
                "probs[0]; pick a min-p on the 0.01 grid in (ratios[3], ratios[2]] and set it with "
                "playground.set(temperature=1.5, top_k=0, top_p=1.0, min_p=...)."))


def _top_k_keeps_more(pg):
    shown, settings, logits = _state(pg)
    require(settings["temperature"] == 1.0, f"the temperature is {settings['temperature']:g}; compare the two "
            f"filters at temperature 1", "temperature")
    nucleus = int(next_token_view(logits, temperature=1.0, top_p=0.9).num_kept[0])
    require(nucleus < 5, f"after {shown!r} top-p 0.9 keeps {nucleus} tokens, so top-k 5 keeps none that top-p 0.9 "
            f"removes; find a prompt where the model is surer of the next token", "nucleus too big")
    return CheckResult(True, f"✅ Correct — after {shown!r} top-p 0.9 keeps {nucleus} token{'s' * (nucleus != 1)}, "
                             f"top-k 5 keeps 5")


register("10.top_k_keeps_more", run(_top_k_keeps_more),
         hints=("Top-k 5 always keeps 5 tokens; top-p 0.9 keeps as many as it takes to reach 90 % of the mass. "
                "When does that take fewer than 5?",
                "When the model is nearly sure of the next character: in the middle of a well-known word or phrase, "
                "where one or two letters carry 90 % of the probability.",
                "Set a prompt that ends in the middle of a famous line, e.g. one whose next letter is forced by "
                "the word it is in, with playground.set(prompt=..., temperature=1.0), and check the readout: "
                "with top-p 0.9 on, it must show fewer than 5 tokens kept."))
