"""Serve a trained checkpoint over HTTP with LitServe: POST an image, get its likeliest classes as JSON.

    python scripts/serve.py --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt
    python scripts/serve.py --ckpt_path last --port 8080 --top_k 5
    curl -F image=@cat.jpg http://127.0.0.1:8000/predict
    curl -H "Content-Type: application/json" -d "{\"image\": \"$(base64 -w0 cat.jpg)\"}" http://127.0.0.1:8000/predict

The answer is {"top": [{"class": "cat", "probability": 0.81}, ...]}, likeliest first. Any image PIL reads
is converted to RGB and resized to 32x32, as for predict.py. Requests that arrive together run as one batch
(--max_batch_size, --batch_timeout). What the server cannot take gets a 4xx status and {"detail": why}
(lit_cifar/serve.py). It listens on 127.0.0.1 only unless --host 0.0.0.0 is given; GET /health says
whether it is ready. Needs `pip install -e '.[serve]'`. --ckpt_path last and best name a checkpoint of
the newest run under lightning_logs/, as for test.py.
"""

from __future__ import annotations

import argparse
import socket
import sys
from typing import get_args

import torch

from lit_cifar.cli import one_line_errors, quiet_startup
from lit_cifar.errors import UserError
from lit_cifar.resume import checkpoint_argument
from lit_cifar.sources import CLASSES
from lit_cifar.tta import TestTimeAugmentation

SERVE_EXTRA = "pip install -e '.[serve]'"


def check_port_free(host: str, port: int) -> None:
    """Refuse a port something already listens on, before the model is loaded (uvicorn would only log it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as err:
            raise UserError(f"--port {port}: {host} port {port} is taken ({err.strerror}): stop what listens there "
                            "or give another --port") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint a run wrote, or last / best (under lightning_logs/)")
    parser.add_argument("--host", default="127.0.0.1", choices=("127.0.0.1", "0.0.0.0", "::"),
                        help="where to listen: 127.0.0.1 (default) this machine only, 0.0.0.0 or :: every network")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--top_k", type=int, default=3, help="classes per answer, likeliest first")
    parser.add_argument("--tta", choices=get_args(TestTimeAugmentation), help="test-time augmentation (default: the checkpoint's)")
    parser.add_argument("--accelerator", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--max_batch_size", type=int, default=64, help="the most requests run as one batch")
    parser.add_argument("--batch_timeout", type=float, default=0.005,
                        help="seconds a batch waits for more requests after its first")
    parser.add_argument("--max_bytes", type=int, default=10_000_000, help="the largest request body taken (413 above)")
    parser.add_argument("--max_pixels", type=int, default=4096 * 4096, help="the most pixels an image may have (413 above)")
    args = parser.parse_args()
    for flag, value, low in (("--top_k", args.top_k, 1), ("--max_batch_size", args.max_batch_size, 1),
                             ("--max_bytes", args.max_bytes, 1), ("--max_pixels", args.max_pixels, 1),
                             ("--port", args.port, 1024)):
        if value < low:
            parser.error(f"{flag} must be at least {low}, got {value}")
    if args.top_k > len(CLASSES):
        parser.error(f"--top_k must be at most {len(CLASSES)}, got {args.top_k}")
    if not 0 <= args.batch_timeout <= 10:
        parser.error(f"--batch_timeout must be in [0, 10] seconds, got {args.batch_timeout}")
    quiet_startup()
    with one_line_errors(sys.argv[1:], "serve.py"):
        try:
            import litserve as ls
            import python_multipart  # noqa: F401  (starlette parses the uploads with it)

            from lit_cifar.serve import API_PATH, CifarAPI, ImageUploads
        except ImportError as err:
            raise UserError(f"serve.py needs {err.name}, not installed here: {SERVE_EXTRA}") from None
        from lit_cifar.export import exportable

        if args.accelerator == "cuda" and not torch.cuda.is_available():
            raise UserError("--accelerator cuda was given but no GPU was found (torch.cuda.is_available() is False); "
                            "leave it out to serve on the CPU")
        check_port_free(args.host, args.port)
        ckpt_path, why = checkpoint_argument(args.ckpt_path)
        if why:
            print(f"Serving {ckpt_path} ({why})", file=sys.stderr)
        model = exportable(ckpt_path, args.tta)  # read once, here, where a bad checkpoint's error is one line
        api = CifarAPI(model, args.top_k, args.max_batch_size, args.batch_timeout)
        server = ls.LitServer(api, accelerator=args.accelerator, devices=1,
                              middlewares=[(ImageUploads, {"max_bytes": args.max_bytes, "max_pixels": args.max_pixels})])
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(f"Serving {ckpt_path} (tta {model.tta}) at http://{host}:{args.port}{API_PATH}: "
              f"curl -F image=@cat.jpg http://{host}:{args.port}{API_PATH}", file=sys.stderr)
    server.run(host=args.host, port=args.port, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
