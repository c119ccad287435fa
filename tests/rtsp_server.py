"""A tiny RTSP server for the live-source tests: GStreamer's RTSP server on 127.0.0.1.

Run by the system interpreter (/usr/bin/python3), whose `gi` has GstRtspServer (Debian packages
gir1.2-gst-rtsp-server-1.0, gstreamer1.0-rtsp, gstreamer1.0-plugins-ugly, python3-gi; `make
live-deps` installs them). It serves generated H.264 video at rtsp://127.0.0.1:PORT/MOUNT,
prints "ready" on stdout once it listens, and runs until killed or until --seconds pass.

    /usr/bin/python3 tests/rtsp_server.py --port 8554 --mount /cam --size 320x192 --fps 25
"""

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mount", default="/cam")
    parser.add_argument("--size", default="320x192", help="WxH of the generated video")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--pattern", default="ball", help="videotestsrc pattern (ball moves: something to track)")
    parser.add_argument("--seconds", type=float, default=600.0, help="stop after this long (a bound, in case nobody kills us)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( videotestsrc is-live=true pattern={args.pattern} "
        f"! video/x-raw,width={width},height={height},framerate={args.fps}/1 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.fps} "
        "! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    factory.set_shared(True)
    server.get_mount_points().add_factory(args.mount, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    GLib.timeout_add(int(args.seconds * 1000), loop.quit)
    print("ready", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
