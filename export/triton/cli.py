"""`omc triton-repo`: a Triton model repository from an export or a build (light module)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from omc.config import TRITON_INSTANCE_KINDS, TRITON_PLATFORMS, TritonRepoConfig
from omc.errors import BadInput

log = logging.getLogger(__name__)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated batch sizes such as 2,4, got '{text}'") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = TritonRepoConfig()
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
    parser.add_argument("--platform", choices=TRITON_PLATFORMS, default=defaults.platform,
                        help="backend of the engine models; python runs ONNX Runtime inside Triton's Python backend "
                        f"(default: {defaults.platform})")
    parser.add_argument("--model-name", default=defaults.model_name, help=f"the model clients call (default: {defaults.model_name})")
    parser.add_argument("--preferred-batch-sizes", type=_sizes, default=defaults.preferred_batch_sizes, metavar="N,N",
                        help="detector batch sizes the dynamic batcher aims for (default: any up to the export's max batch)")
    parser.add_argument("--max-queue-delay-us", type=int, default=defaults.max_queue_delay_us, metavar="US",
                        help=f"longest wait of the detector's batcher for a fuller batch (default: {defaults.max_queue_delay_us})")
    parser.add_argument("--detector-instances", type=int, default=defaults.detector_instances, metavar="N",
                        help=f"detector model instances (default: {defaults.detector_instances})")
    parser.add_argument("--recheck-instances", type=int, default=defaults.recheck_instances, metavar="N",
                        help=f"re-check model instances (default: {defaults.recheck_instances})")
    parser.add_argument("--frame-instances", type=int, default=defaults.frame_instances, metavar="N",
                        help="frame model instances: frames in flight at once, from all clients "
                        f"(default: {defaults.frame_instances})")
    parser.add_argument("--instance-kind", choices=TRITON_INSTANCE_KINDS, default=defaults.instance_kind,
                        help=f"where the engine models run; auto: a GPU when the server has one (default: {defaults.instance_kind})")
    parser.add_argument("--overwrite", action="store_true", help="replace models of the same names in the repository")
    parser.set_defaults(func=run_triton_repo)


def run_triton_repo(args: argparse.Namespace) -> int:
    from omc import contract
    from omc.export.triton.repository import write_repository

    if not (args.engines / contract.EXPORT_JSON).is_file():
        raise BadInput(f"--engines {args.engines} has no {contract.EXPORT_JSON}; point it at the output folder of omc export or omc build")
    config = TritonRepoConfig(
        platform=args.platform, model_name=args.model_name, preferred_batch_sizes=args.preferred_batch_sizes,
        max_queue_delay_us=args.max_queue_delay_us, detector_instances=args.detector_instances,
        recheck_instances=args.recheck_instances, instance_kind=args.instance_kind,
        frame_instances=args.frame_instances,
    )  # fmt: skip
    for model in write_repository(args.engines, args.out, config, overwrite=args.overwrite):
        print(model)
    log.info("next: tritonserver --model-repository %s, then omc track VIDEO --backend triton --url HOST:8001", args.out.resolve())
    return 0
