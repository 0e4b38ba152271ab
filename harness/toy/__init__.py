"""The toy model pdbench ships and trains itself (issue 5): a 2.5 M parameter Qwen2 with its own
byte-level BPE tokenizer, trained SDLM-style on the synthetic `arith` and `toy-code` suites.

    tokenizer.py  build + save the tokenizer (PreTrainedTokenizerFast, ChatML template, mask token)
    layout.py     the SDLM training layout: clean sequence + blocks, the 4D visibility mask, packing
    train.py      `pdbench train-toy` (entry point: `main(argv)`, alias `train_toy`)
    evaluate.py   greedy reference evaluator (AR, SDLM confidence) and the preset's real decoders
    checkpoint/   the committed weights, config, tokenizer, train_log.jsonl and TRAINING.md
"""
