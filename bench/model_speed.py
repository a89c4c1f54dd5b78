"""Per-block latency of the shipped model and per-codec encode/decode time.

    python -m bench.model_speed [--repeats 300]

Latency at batch 1 on one thread (median after warm-up), as the profiler measures it;
codecs on real activations of real test images, per sample.
"""

from __future__ import annotations

import argparse

import torch
from rich.console import Console
from rich.table import Table

from bench.common import write
from profiles import DEFAULT_WEIGHTS, codecs
from profiles.dataset import load_official, to_tensor_input
from profiles.host import median_time
from profiles.model import load_model
from settings.cli import summary_of


def _median_us(fn, repeats: int) -> float:
    return median_time(fn, repeats, max(3, repeats // 5)) * 1e6


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=summary_of(__doc__))
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = load_model(DEFAULT_WEIGHTS)
    images = load_official("test").images[:16]
    x = torch.from_numpy(to_tensor_input(images[:1]))
    blocks = []
    with torch.inference_mode():
        h = x
        for b, (block, exit_head) in enumerate(zip(model.blocks, model.exits, strict=True), 1):
            inp = h
            blocks.append(
                {
                    "block": b,
                    "block_us": _median_us(lambda: block(inp), args.repeats),  # noqa: B023
                }
            )
            h = block(inp)
            out = h
            blocks[-1]["exit_us"] = _median_us(lambda: exit_head(out), args.repeats)  # noqa: B023
        full = _median_us(lambda: model(x), args.repeats)
    codec_rows = []
    with torch.inference_mode():
        for cut in range(model.n_blocks):
            sent = images[0] if cut == 0 else model.head(cut, x)[0].numpy()
            for level in range(codecs.N_LEVELS):
                name = codecs.codec_name(cut, level)
                blob = codecs.encode(name, sent)
                codec_rows.append(
                    {
                        "cut": cut,
                        "codec": name,
                        "bytes": len(blob),
                        "encode_us": _median_us(
                            lambda n=name, s=sent: codecs.encode(n, s), args.repeats // 3
                        ),
                        "decode_us": _median_us(lambda b=blob: codecs.decode(b), args.repeats // 3),
                    }
                )
    console = Console()
    t = Table(title=f"blocks (batch 1, 1 thread); full model {full:.1f} µs")
    for c in ("block", "block µs", "exit µs"):
        t.add_column(c, justify="right")
    for r in blocks:
        t.add_row(str(r["block"]), f"{r['block_us']:.1f}", f"{r['exit_us']:.1f}")
    console.print(t)
    t = Table(title="codecs (one sample)")
    for c in ("cut", "codec", "bytes", "encode µs", "decode µs"):
        t.add_column(c, justify="right")
    for r in codec_rows:
        t.add_row(
            str(r["cut"]),
            r["codec"],
            str(r["bytes"]),
            f"{r['encode_us']:.1f}",
            f"{r['decode_us']:.1f}",
        )
    console.print(t)
    payload = {"blocks": blocks, "full_model_us": full, "codecs": codec_rows}
    print("wrote", write("model_speed", payload))
    return payload


if __name__ == "__main__":
    main()
