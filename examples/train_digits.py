"""Train a small Flax NNX MLP on scikit-learn's digits, read from ArrayRecord shards.

The 1,797 8x8 digit images that ship with scikit-learn are packed into
ArrayRecord shards (one msgpack record per image: ``image`` float32 (64,)
in [0, 1], ``label`` int64), then read back for training through
``from_source(ArrayRecordSourceModule(...))``: shuffled afresh each epoch,
batched and prefetched on a background thread.

Stop mid-epoch, save, resume in a fresh process::

    python examples/train_digits.py --data /tmp/digits --stop-after 40 --checkpoint /tmp/ck
    python examples/train_digits.py --data /tmp/digits --resume /tmp/ck

The checkpoint is ``/tmp/ck.json`` (pipeline state, a few hundred bytes, plus
the step count) and ``/tmp/ck.npz`` (parameters and optimizer state). The
resumed run reads exactly the batches the uninterrupted run would have read
from that point and ends with the same parameters.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import arrayfs
from arrayfs.nnx import ArrayRecordSourceConfig, ArrayRecordSourceModule, encode_msgpack, from_source


def pack_digits(directory: str, num_shards: int) -> str:
    """Write the digits as ``num_shards`` ArrayRecord shards; returns their glob."""
    pattern = os.path.join(directory, "digits-*.array_record")
    if glob.glob(pattern):
        return pattern
    from sklearn.datasets import load_digits

    os.makedirs(directory, exist_ok=True)
    digits = load_digits()
    images = (digits.data / 16.0).astype(np.float32)  # pixel values 0..16
    labels = digits.target.astype(np.int64)
    bounds = np.linspace(0, len(labels), num_shards + 1).astype(int)
    for k in range(num_shards):
        path = os.path.join(directory, f"digits-{k:05d}-of-{num_shards:05d}.array_record")
        # The writer renames into place on close, so a crash leaves no shard.
        with arrayfs.ArrayRecordWriter(path, "group_size:1,zstd:3") as writer:
            for i in range(bounds[k], bounds[k + 1]):
                writer.write(encode_msgpack({"image": images[i], "label": labels[i]}))
    return pattern


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(64, 64, rngs=rngs)
        self.out = nnx.Linear(64, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="directory for the shards (packed if absent)")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--stop-after", type=int, default=None, metavar="STEPS",
                        help="stop after this many steps in total and write --checkpoint")
    parser.add_argument("--checkpoint", help="path prefix of the checkpoint to write (.json, .npz)")
    parser.add_argument("--resume", help="path prefix of a checkpoint to resume from")
    parser.add_argument("--save-params", help="write the final parameters to this .npz")
    args = parser.parse_args(argv)
    if args.stop_after is not None and not args.checkpoint:
        parser.error("--stop-after needs --checkpoint")

    pattern = pack_digits(args.data, args.shards)

    # Built under one jit (eagerly, each initialiser op compiles on its own),
    # with the "rbg" PRNG: XLA compiles the default threefry sampler several
    # times slower on a small CPU, which would dominate this example's time.
    model = nnx.jit(lambda: MLP(nnx.Rngs(jax.random.key(args.seed, impl="rbg"))))()
    graphdef, params = nnx.split(model, nnx.Param)
    tx = optax.adam(args.lr)
    opt_state = jax.jit(tx.init)(params)

    @jax.jit
    def train_step(params, opt_state, image, label):
        def loss_fn(p):
            logits = nnx.merge(graphdef, p)(image)
            return optax.softmax_cross_entropy_with_integer_labels(logits, label).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    config = ArrayRecordSourceConfig(seed=args.seed, num_epochs=args.epochs, shuffle_files=True,
                                     decode="msgpack")
    # drop_remainder: every batch has the same shape, so train_step compiles once.
    pipeline = from_source(ArrayRecordSourceModule(config, pattern), args.batch_size,
                           drop_remainder=True, prefetch=2)
    pipeline >> (lambda b: {"image": b["image"], "label": b["label"].astype(np.int32)})

    step = 0
    treedef = jax.tree.structure((params, opt_state))
    if args.resume:
        with open(args.resume + ".json") as f:
            saved = json.load(f)
        with np.load(args.resume + ".npz") as arrays:
            leaves = [jnp.asarray(arrays[f"leaf_{i}"]) for i in range(len(arrays.files))]
        params, opt_state = jax.tree.unflatten(treedef, leaves)
        pipeline.set_state(saved["pipeline"])
        step = saved["step"]
        print(f"resumed at step {step}: epoch {saved['pipeline']['source']['epoch']}, "
              f"position {saved['pipeline']['source']['position']}")

    start = time.perf_counter()
    source = pipeline.source
    losses: list[float] = []
    epoch = None
    with pipeline:
        for batch in pipeline:
            # The source's epoch is that of the batch just handed out.
            if source.epoch.get_value() != epoch:
                if losses:
                    print(f"epoch {epoch}: step {step}, mean loss {np.mean(losses):.4f}")
                epoch, losses = source.epoch.get_value(), []
            params, opt_state, loss = train_step(params, opt_state, batch["image"], batch["label"])
            step += 1
            losses.append(float(loss))
            if args.stop_after is not None and step >= args.stop_after:
                leaves = jax.tree.leaves((params, opt_state))
                np.savez(args.checkpoint + ".npz", **{f"leaf_{i}": np.asarray(x) for i, x in enumerate(leaves)})
                state = {"pipeline": pipeline.get_state(), "step": step}
                with open(args.checkpoint + ".json", "w") as f:
                    json.dump(state, f)
                print(f"epoch {epoch} (stopped mid-epoch): step {step}, mean loss {np.mean(losses):.4f}")
                print(f"checkpoint {args.checkpoint}.json/.npz "
                      f"({len(json.dumps(state['pipeline']))} bytes of pipeline state)")
                losses = []
                break
    if losses:
        print(f"epoch {epoch}: step {step}, mean loss {np.mean(losses):.4f}")

    model = nnx.merge(graphdef, params)
    accuracy = _accuracy(model, pattern)
    print(f"{step} steps in {time.perf_counter() - start:.1f} s; accuracy on all digits {accuracy:.3f}")
    if args.save_params:
        flat = {"/".join(map(str, path)): np.asarray(v) for path, v in nnx.to_flat_state(params)}
        np.savez(args.save_params, **flat)
    return 0


def _accuracy(model, pattern) -> float:
    """Fraction of all digits classified correctly (one batch, one compile)."""
    config = ArrayRecordSourceConfig(num_epochs=1, decode="msgpack")
    with from_source(ArrayRecordSourceModule(config, pattern), 2048) as pipe:
        batch = next(pipe)
    predict = nnx.jit(lambda m, x: jnp.argmax(m(x), -1))
    return float((np.asarray(predict(model, batch["image"])) == batch["label"]).mean())


if __name__ == "__main__":
    sys.exit(main())
