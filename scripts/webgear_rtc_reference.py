"""vidgear's WebGear_RTC serving a video file, for the benchmark scripts to measure beside
webgear-rtc with the same clip and the same load generator.

usage: python webgear_rtc_reference.py CLIP PORT [HOST]
"""

import sys

import uvicorn
from vidgear.gears.asyncio import WebGear_RTC


def main() -> None:
    clip, port = sys.argv[1], int(sys.argv[2])
    host = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1"
    # The setting WebGear_RTC documents for many viewers of one source; frames unreduced,
    # as webgear-rtc is run.
    server = WebGear_RTC(
        source=clip,
        logging=False,
        enable_live_broadcast=True,
        frame_size_reduction=0,
    )
    try:
        uvicorn.run(server(), host=host, port=port, log_level="warning")
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
