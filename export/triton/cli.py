"""`omc triton-repo`: a Triton model repository from an export or a build (light module)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from omc.config import TritonRepoConfig
from omc.errors import BadInput
from omc.flags import ConfigFlags

log = logging.getLogger(__name__)

REPO_FLAGS = ConfigFlags(TritonRepoConfig)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "triton-repo",
        help="write a Triton Inference Server model repository of the engines",
        description=(
            "Write three models into a Triton model repository: <name>_detector (dynamic batching up to the "
            "export's max batch), <name>_recheck, and <name>, the model a client calls: one frame per request, "
            "running the detector and, when the request carries tracklets, the re-check (Python backend, "
            "BLS), so the detector's maps stay in the server. Track against it with "
            "omc track --backend triton --url HOST:PORT."
        ),
    )
    parser.add_argument("--engines", type=Path, required=True, metavar="DIR",
                        help="omc export folder (ONNX) or, for tensorrt_plan, omc build folder (plans)")
    parser.add_argument("--out", type=Path, required=True, metavar="REPO", help="the model repository (created if missing)")
    REPO_FLAGS.add_to(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace models of the same names in the repository")
    parser.set_defaults(func=run_triton_repo)


def run_triton_repo(args: argparse.Namespace) -> int:
    from omc import contract
    from omc.export.triton.repository import write_repository

    if not (args.engines / contract.EXPORT_JSON).is_file():
        raise BadInput(f"--engines {args.engines} has no {contract.EXPORT_JSON}; point it at the output folder of omc export or omc build")
    config = REPO_FLAGS.config(args)
    for model in write_repository(args.engines, args.out, config, overwrite=args.overwrite):
        print(model)
    log.info("next: tritonserver --model-repository %s, then omc track VIDEO --backend triton --url HOST:8001", args.out.resolve())
    return 0
