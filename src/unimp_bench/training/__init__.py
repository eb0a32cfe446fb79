"""Multi-task UniMP training on a DeepSpeed engine (GPUs through the DeepSpeed launcher, or the CPU).

`launcher.run_training` is what `unimp-bench train` calls. It resolves the preset (plus command-line
overrides, config.py), prepares the run folder once (train examples, tokenizer, config.yaml;
run_folder.py), then either re-launches itself through the `deepspeed` launcher (`--gpus N`,
`--hostfile H`) or runs the worker in this process on the CPU. The worker (`worker.train_worker`)
runs the learning strategy's stages (plan.py); each stage is one DeepSpeed engine over the parameters
that stage trains.

Run folder:
    config.yaml               the resolved configuration (what --resume must match)
    examples/                 the train split of every configured task (unimp-bench build format)
    tokenizer/                the base tokenizer (trained BPE for random LMs, the LM's own otherwise)
    checkpoints/<tag>/        DeepSpeed checkpoints (model, optimizer, scheduler) + client state
                              (stage, step, sampler position, RNG states) + export/ of that step
    export/                   the latest export (safetensors + unimp.json + tokenizer), what eval loads
    logs/train.jsonl          one JSON line per logged step; logs/tensorboard/ the same for TensorBoard

The sampler's order is a pure function of (seed, stage, epoch), so resuming from a checkpoint replays
exactly the batches an uninterrupted run would have seen.
"""
