"""The exercises of each lesson, one module per lesson (`l04` holds lesson 04's), with their solutions.

`lmlab.exercises.check("04.name", answer)` imports `lmlab.exercise_bank.l04` on first use, which
registers that lesson's exercises.
"""
