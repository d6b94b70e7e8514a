"""A real RTSP camera on loopback: GStreamer's RTSP server serving an MP4 file's H.264.

Run with the SYSTEM python3 (it needs Debian's python3-gi and gir1.2-gst-rtsp-server-1.0,
which the Makefile installs):  /usr/bin/python3 rtsp_server.py PORT /cam FILE.mp4
Prints "ready" once it listens. Each client gets the file from its start.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

Gst.init(None)
port, mount, path = sys.argv[1], sys.argv[2], sys.argv[3]
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(f'( filesrc location="{path}" ! qtdemux ! h264parse config-interval=-1 '
                   f"! rtph264pay name=pay0 pt=96 config-interval=1 )")
factory.set_shared(False)
server.get_mount_points().add_factory(mount, factory)
if server.attach(None) == 0:
    print("cannot listen", flush=True)
    sys.exit(1)
print("ready", flush=True)
GLib.MainLoop().run()
