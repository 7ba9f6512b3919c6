"""Start a command as PID 1 of a new PID namespace, as a given user: what `docker run` does.

buildah's chroot isolation runs a command in the host's PID namespace, so the
container tests run this file's source with the image's own Python
(`python -c SOURCE USER COMMAND...`, as root with CAP_SYS_ADMIN). It makes a new
PID namespace, forks, drops to USER (a name, `uid` or `uid:gid`, as in the
image's `User`) and executes COMMAND there as PID 1, where the kernel delivers
only the signals that the program handles. The parent prints the child's PID as
seen from the host (so a test can signal it the way a container engine does),
waits for it and exits with its exit code.
"""

from __future__ import annotations

import os
import pwd
import sys

PID_LINE = "pid1-init: host pid "
"""Printed on stderr before the host PID of the command."""


def _credentials(user: str) -> tuple[int, int, str | None]:
    """(uid, gid, user name or None) of an image's `User` value."""
    name, _, group = user.partition(":")
    if name.isdigit():
        uid, gid, known = int(name), int(name), None
        try:
            entry = pwd.getpwuid(uid)
            gid, known = entry.pw_gid, entry.pw_name
        except KeyError:
            pass
    else:
        entry = pwd.getpwnam(name)
        uid, gid, known = entry.pw_uid, entry.pw_gid, entry.pw_name
    if group:
        gid = int(group)
    return uid, gid, known


def main(argv: list[str]) -> int:
    """Run argv[1:] as user argv[0] in a new PID namespace; return its exit code."""
    user, command = argv[0], argv[1:]
    uid, gid, name = _credentials(user)
    os.unshare(os.CLONE_NEWPID)
    child = os.fork()
    if child == 0:
        if name is None:
            os.setgroups([])
        else:
            os.initgroups(name, gid)
        os.setgid(gid)
        os.setuid(uid)
        try:
            os.execvp(command[0], command)
        except OSError as exc:
            print(f"pid1-init: cannot execute {command[0]}: {exc}", file=sys.stderr, flush=True)
            os._exit(127)
    print(f"{PID_LINE}{child}", file=sys.stderr, flush=True)
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
