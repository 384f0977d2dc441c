"""The kernel command line in the grub configuration of a root (prefix): adding words to it.

Used for `numa=off` (boot.numa) and `console=ttyS0 earlyprintk=ttyS0` (`waagent
-serialconsole`, cli/serialconsole.py). Both edit, under the root they are given:
- `etc/default/grub`: GRUB_CMDLINE_LINUX (what grub-mkconfig/update-grub will write next);
- the generated configuration as it is now, so the next boot has the words without running
  grub-mkconfig (which probes every disk and cannot work in a prefix): the `linux`/`linux16`/
  `linuxefi` lines of boot/grub/grub.cfg and boot/grub2/grub.cfg, and the `kernel` lines of
  legacy grub's boot/grub/menu.lst (the 2.6.37 era).
A word already present is not added again (the edit is idempotent); files are rewritten
atomically with their mode; a file that is a symlink or not a regular file is refused.
"""

import os
import re
import stat
from typing import List, Sequence

from supervisor.privileged import atomic_write, fail, read_capped

DEFAULT_GRUB = "etc/default/grub"
GENERATED = ("boot/grub/grub.cfg", "boot/grub2/grub.cfg", "boot/grub/menu.lst")
MAX_BYTES = 4 * 1024 * 1024
_CMDLINE = re.compile(r'^([ \t]*GRUB_CMDLINE_LINUX=)(["\']?)(.*?)\2[ \t]*$', re.M)
_KERNEL_LINE = re.compile(r"^([ \t]*(?:linux|linux16|linuxefi|kernel)[ \t]+\S+)(.*)$", re.M)


def _missing(present: str, words: Sequence[str]) -> List[str]:
    have = present.split()
    return [w for w in words if w not in have]


def _edit_default(text: str, words: Sequence[str]) -> str:
    match = _CMDLINE.search(text)
    if match is None:
        if text and not text.endswith("\n"):
            text += "\n"
        return text + 'GRUB_CMDLINE_LINUX="%s"\n' % " ".join(words)
    add = _missing(match.group(3), words)
    if not add:
        return text
    value = " ".join([match.group(3).strip()] + add).strip()
    quote = match.group(2) or '"'
    return text[:match.start()] + "%s%s%s%s" % (match.group(1), quote, value, quote) + \
        text[match.end():]


def _edit_generated(text: str, words: Sequence[str]) -> str:
    def line(match):
        add = _missing(match.group(2), words)
        return match.group(0) if not add else \
            match.group(1) + match.group(2).rstrip() + " " + " ".join(add)
    return _KERNEL_LINE.sub(line, text)


def add_kernel_words(root: str, words: Sequence[str]) -> List[str]:
    """Add `words` to the kernel command line of the grub configuration under `root`;
    returns the files changed (relative to root). FAILED if there is no grub configuration."""
    changed, seen = [], 0
    for relative, edit in [(DEFAULT_GRUB, _edit_default)] + [(g, _edit_generated)
                                                             for g in GENERATED]:
        path = os.path.join(root or "/", relative)
        data = read_capped(path, MAX_BYTES)
        if data is None:
            continue
        seen += 1
        text = data.decode("utf-8", "surrogateescape")
        new = edit(text, words)
        if new != text:
            mode = stat.S_IMODE(os.lstat(path).st_mode)
            atomic_write(path, new.encode("utf-8", "surrogateescape"), mode)
            changed.append(relative)
    if not seen:
        raise fail("no grub configuration under %s (%s)" % (root or "/", ", ".join(
            (DEFAULT_GRUB,) + GENERATED)))
    return changed
