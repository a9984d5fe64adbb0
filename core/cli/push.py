"""``python -m core push FOLDER ORG/NAME [--token T] [--public] [--merge] [--dry-run]``.

Uploads a bundle folder or an edited-model folder (core.share) to a Hub model repo in one atomic
commit; new repos are private unless ``--public``. ``--merge`` first folds an edited model's edits
into full weights (core.share.merge_edited) and uploads that bundle instead.

This module also gives ``python -m core convert SRC DEST`` a ``--push ORG/NAME`` option: the
checkpoint is checked against ``models/known_models.json`` (sha256, or the torch.hub file-name
prefix) before converting, the mirror's config.json and README record the original file, URL,
hash and licence note, and the bundle is pushed. A checkpoint whose name is known but whose hash
differs is refused; an unknown file is pushed as "unverified" only with ``--allow-unverified``.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path


def _print_result(res, dry: bool = False) -> None:
    total = sum(size for _, size in res.files)
    head = "would upload" if dry else f"pushed to {res.url or res.repo_id}"
    print(f"{head}: {len(res.files)} files, {total / 1024:.1f} KiB"
          + ("" if dry or not res.commit else f" (commit {res.commit[:10]})"))
    for rel, size in res.files:
        print(f"  {rel}  {size} bytes")


def main(args) -> int:
    from ..share import PushResult, merge_edited, push, shareable_files
    folder = Path(args.folder)
    with tempfile.TemporaryDirectory(prefix="pwn-merge-") as tmp:
        if args.merge:
            folder = merge_edited(folder, Path(tmp) / folder.name)
            print(f"merged the edits into full weights: {folder}")
        if args.dry_run:
            files = [(rel, p.stat().st_size) for rel, p in shareable_files(folder)]
            _print_result(PushResult(args.repo_id, None, None, files), dry=True)
            return 0
        res = push(folder, args.repo_id, token=args.token, private=not args.public,
                   commit_message=args.message)
        _print_result(res)
    return 0


# --------------------------------------------------------------------------- convert --push
def publish_mirror(src, dest, repo_id: str, *, token=None, private: bool = True,
                   known_id: str | None = None, allow_unverified: bool = False,
                   check_only: bool = False):
    """Verify ``src`` against the known models, annotate the converted bundle at ``dest`` and
    push it. With ``check_only`` only the verification runs (before converting); returns the
    verification dict (``entry`` added)."""
    from ..hub import HubError
    from ..known import entry_for_file, known_model, verify_checkpoint
    entry = known_model(known_id) if known_id else entry_for_file(src)
    if entry is None:
        if not allow_unverified:
            raise HubError(f"{Path(src).name}: not a checkpoint listed in models/known_models.json,"
                           " so the mirror cannot be verified; pass --known ID or "
                           "--allow-unverified")
        ver = {"file": Path(src).name, "sha256": None, "checked": None, "verified": False}
    else:
        ver = verify_checkpoint(src, entry)      # HubError on a mismatch
    ver["entry"] = entry
    if check_only:
        return ver
    from ..share import push
    dest = Path(dest)
    cfg_path = dest / "config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    mirror = {"file": ver["file"], "verified": ver["verified"], "checked": ver["checked"]}
    if entry:
        mirror.update(id=entry["id"], url=entry.get("url"), licence=entry.get("licence"))
    cfg["mirror_of"] = mirror
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    sha = cfg.get("source", {}).get("sha256")
    lines = ["", "## Mirror", "",
             f"A safetensors mirror of `{ver['file']}` (sha256 `{sha}`)"
             + (f", originally at {entry['url']}" if entry and entry.get("url") else "") + ".",
             ("Verified against " + ("the full sha256" if ver["checked"] == "sha256" else
                                     "the sha256 prefix in the torch.hub file name")
              + " recorded in Painting with Neurons' models/known_models.json.")
             if ver["verified"] else "Not verified: the file is not a known checkpoint.", ""]
    if entry and entry.get("licence"):
        lines += ["Licence note: " + entry["licence"], ""]
    with open(dest / "README.md", "a", encoding="utf-8") as f:
        f.write("\n".join(lines))
    res = push(dest, repo_id, token=token, private=private,
               commit_message=f"Mirror of {ver['file']} (sha256 {str(sha)[:12]}...)")
    _print_result(res)
    return ver


def _extend_convert(subparsers) -> None:
    """Add --push (and friends) to the built-in ``convert`` command, if it exists."""
    conv = subparsers.choices.get("convert")
    if conv is None or conv.get_default("run") is None:
        return
    original = conv.get_default("run")
    conv.add_argument("--push", metavar="ORG/NAME",
                      help="verify SRC against models/known_models.json, then publish DEST as a "
                           "Hub mirror (private unless --public)")
    conv.add_argument("--known", metavar="ID", help="with --push: the known-model id to verify "
                      "against (default: matched by file name)")
    conv.add_argument("--allow-unverified", action="store_true",
                      help="with --push: publish a checkpoint that is not a known model")
    conv.add_argument("--token", help="with --push: Hugging Face token (default: HF_TOKEN)")
    conv.add_argument("--public", action="store_true", help="with --push: make a new repo public")

    def run(args):
        if not getattr(args, "push", None):
            return original(args)
        ver = publish_mirror(args.src, args.dest, args.push, known_id=args.known,
                             allow_unverified=args.allow_unverified, check_only=True)
        print(f"{ver['file']}: " + (f"sha256 matches {ver['entry']['id']} ({ver['checked']})"
                                    if ver["verified"] else "unverified (not a known model)"))
        code = original(args)
        if code:
            return code
        publish_mirror(args.src, args.dest, args.push, token=args.token,
                       private=not args.public, known_id=args.known,
                       allow_unverified=args.allow_unverified)
        return 0

    conv.set_defaults(run=run)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("push", help="upload a bundle or edited-model folder to the Hub",
                              description="Upload FOLDER (a model bundle, or an edited model "
                              "written by core.share.export_edited) to the Hub model repo "
                              "ORG/NAME in one atomic commit.")
    p.add_argument("folder", help="bundle folder or edited-model folder")
    p.add_argument("repo_id", metavar="ORG/NAME", help="Hub model repo (created if needed)")
    p.add_argument("--token", help="Hugging Face token with write access (default: HF_TOKEN "
                   "or a stored `hf auth login`)")
    p.add_argument("--public", action="store_true", help="make a new repo public (default private)")
    p.add_argument("--message", help="commit message")
    p.add_argument("--merge", action="store_true",
                   help="fold an edited model's edits into full weights and push that bundle")
    p.add_argument("--dry-run", action="store_true",
                   help="list the files that would be uploaded, contact nothing")
    p.set_defaults(run=main)
    _extend_convert(subparsers)
