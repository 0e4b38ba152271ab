"""How the shipped toy checkpoints are trained, evaluated and diagnosed. Not part of the installed
package: a wheel carries only the checkpoints (harness/checkpoints/) and their model cards.

    data.py       seeded training streams of train-split synthetic problems, arithmetic drills
    tokenizer.py  build + save the toy tokenizer (byte-level BPE, ChatML template, mask token)
    layout.py     the SDLM training layout: clean sequence + blocks, the 4D visibility mask, packing
    train.py      python -m toy.train --out DIR  (the pdbench-toy recipe)
    evaluate.py   greedy reference evaluator (AR, SDLM confidence) and the preset's real decoders
    diagnose.py   teacher-forced accuracy on arith by token role
    TRAINING.md   every run tried, with its measured results; logs/ the shipped runs' loss logs

Run from the repository root (`python -m toy.train ...`); the suites and prompts come from the package.
"""
