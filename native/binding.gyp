{
  "targets": [
    {
      "target_name": "vfio_native",
      "sources": [
        "src/addon.c",
        "src/errors.c",
        "src/fdpass.c",
        "src/fdmsg.c",
        "src/sock.c",
        "src/peer.c",
        "src/pidfd.c",
        "src/mem.c",
        "src/ioctl.c",
        "src/notify.c",
        "src/poll.c",
        "src/epoll.c",
        "src/lock.c",
        "src/sockdiag.c"
      ],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration", "-O2"]
    }
  ]
}
