"""What a data file really is: its format from the extension checked against its first bytes, and the
safety checks that run before a workbook is opened (encryption, damaged zip, zip bombs)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from qatune.console import QatuneError

EXTENSIONS = {
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".csv": "csv",
    ".tsv": "tsv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}
SUPPORTED = ".xlsx, .xlsm, .csv, .tsv, .json, .jsonl or .parquet"
_RESAVE = {
    ".xls": "an old Excel 97-2003 workbook: open it and save it as .xlsx",
    ".ods": "an OpenDocument spreadsheet: save it as .xlsx or .csv",
    ".numbers": "a Numbers document: export it as .xlsx or .csv",
}

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
ZIP_MAGIC = b"PK\x03\x04"
PARQUET_MAGIC = b"PAR1"
_ENCRYPTED_PACKAGE = "EncryptedPackage".encode("utf-16-le")
_BIFF8_GLOBALS_BOF = b"\x09\x08\x10\x00\x00\x06\x05\x00"  # BOF record, 16 bytes, BIFF8, workbook globals
_FILEPASS = b"\x2f\x00"  # record type of FilePass, which follows the 20-byte BOF record when encrypted
_MINI_SECTOR = 64  # streams start on 64-byte (mini) or 512/4096-byte sector boundaries
_OLE_CHUNK = 1 << 20  # a multiple of every sector size, so no record check spans two chunks

# Limits on what a workbook may expand to before any of it is parsed.
MAX_UNZIPPED_BYTES = 1 << 30
MAX_MEMBER_RATIO = 200
RATIO_CHECK_FROM = 16 << 20
MAX_MEMBERS = 10_000


def detect_format(path: Path) -> tuple[str, str | None]:
    """(format, note): the format to read `path` as, and a warning when the extension was wrong."""
    path = Path(path)
    ext = path.suffix.lower()
    declared = EXTENSIONS.get(ext)
    if declared is None and ext not in _RESAVE:
        shown = f"'{ext}'" if ext else "no extension"
        raise QatuneError(f"unsupported file type ({shown}); use {SUPPORTED}", path=path)
    head = _head(path)
    actual = _content_format(path, head)
    if declared is None:
        if actual != "xlsx":
            raise QatuneError(f"this is {_RESAVE[ext]}", path=path)
        return "xlsx", f"{path.name} is named {ext} but is an Excel workbook (.xlsx); it was read as one"
    if actual is None and declared in ("xlsx", "parquet"):
        actual = "csv"
    if actual == "object":  # one JSON object, or JSON Lines whose first record spans lines
        actual = declared if declared in ("json", "jsonl") else "json"
    if actual is None or actual == declared:
        return declared, None
    if declared in ("json", "jsonl") and actual in ("json", "jsonl"):
        return actual, None
    return actual, f"{path.name} is named {ext} but is {_NAMES[actual]}; it was read as such"


_NAMES = {
    "xlsx": "an Excel workbook",
    "parquet": "a Parquet file",
    "json": "JSON",
    "jsonl": "JSON Lines",
    "csv": "plain text (CSV)",
}


def _head(path: Path) -> bytes:
    if not path.exists():
        raise QatuneError("file not found; check the path", path=path)
    if path.is_dir():
        raise QatuneError("is a folder; give a spreadsheet file", path=path)
    try:
        with open(path, "rb") as handle:
            return handle.read(4096)
    except OSError as exc:
        raise QatuneError(f"cannot open the file ({exc.strerror}); check its permissions", path=path) from None


def _content_format(path: Path, head: bytes) -> str | None:
    """The format the bytes say, or None when they do not decide (plain text read per the extension)."""
    if not head:
        raise QatuneError("the file is empty; add a header row and question/answer rows", path=path)
    if head.startswith(OLE_MAGIC):
        raise QatuneError(_ole_message(path), path=path)
    if head.startswith(ZIP_MAGIC) or head.startswith(b"PK\x05\x06"):
        return "xlsx"
    if head.startswith(PARQUET_MAGIC):
        return "parquet"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"["):
        return "json"
    if text.startswith(b"{"):
        first_line = text.split(b"\n", 1)[0].rstrip()
        return "jsonl" if first_line.endswith(b"}") and b"\n{" in text.replace(b"\r", b"") else "object"
    if not head.startswith((b"\xff\xfe", b"\xfe\xff")) and _looks_binary(head):
        raise QatuneError(f"is binary data, not a spreadsheet; use {SUPPORTED}", path=path)
    return None


def _looks_binary(head: bytes) -> bool:
    """Text holds almost no control bytes; stray NULs alone are tolerated (they are removed when read)."""
    controls = sum(1 for b in head if b < 32 and b not in (0, 9, 10, 12, 13, 27) or b == 127)
    return controls > len(head) * 0.05 or head.count(0) > len(head) * 0.3


def _ole_message(path: Path) -> str:
    """An OLE2 container is either an encrypted xlsx or an old binary .xls (itself maybe encrypted)."""
    try:
        encrypted = _ole_encrypted(path)
    except OSError:
        encrypted = False
    if encrypted:
        return (
            "the workbook is password-protected; open it, remove the password "
            "(File > Info > Protect Workbook > Encrypt), save, and try again"
        )
    return "this is an old Excel 97-2003 (.xls) or other Office binary file: open it and save it as .xlsx"


def _ole_encrypted(path: Path) -> bool:
    """Signs of encryption in an OLE2 file, without parsing it: an encrypted xlsx is the OLE container Office
    wraps around an "EncryptedPackage" stream (its name is stored in UTF-16LE in the directory); an encrypted
    .xls has a FilePass record right after the BOF record that opens its Workbook stream (at a sector start)."""
    with open(path, "rb") as handle:
        carry = b""
        while chunk := handle.read(_OLE_CHUNK):
            if _ENCRYPTED_PACKAGE in carry + chunk:
                return True
            at = chunk.find(_BIFF8_GLOBALS_BOF)
            while at != -1:
                if at % _MINI_SECTOR == 0 and chunk.startswith(_FILEPASS, at + 20):
                    return True
                at = chunk.find(_BIFF8_GLOBALS_BOF, at + 1)
            carry = chunk[-len(_ENCRYPTED_PACKAGE) :]
    return False


def check_zip(path: Path) -> None:
    """Refuse a damaged archive or one that would expand to far more than a workbook needs."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise QatuneError(
            f"the workbook is damaged or truncated ({_short(exc)}); open and re-save it "
            "in a spreadsheet app, or export it to .csv",
            path=path,
        ) from None
    if len(members) > MAX_MEMBERS:
        raise QatuneError(
            f"the workbook archive holds {len(members):,} parts, which no spreadsheet needs; "
            "it looks malicious: re-save it in a spreadsheet app",
            path=path,
        )
    total = sum(m.file_size for m in members)
    if total > MAX_UNZIPPED_BYTES:
        raise QatuneError(
            f"the workbook would expand to {total / 2**30:.1f} GiB (limit "
            f"{MAX_UNZIPPED_BYTES / 2**30:.0f} GiB); it is a zip bomb or far too large: "
            "export the data to .csv",
            path=path,
        )
    for member in members:
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > RATIO_CHECK_FROM and ratio > MAX_MEMBER_RATIO:
            raise QatuneError(
                f"part {member.filename!r} expands {ratio:.0f}x to {member.file_size >> 20} MiB, "
                "as a zip bomb does; re-save the workbook in a spreadsheet app or export "
                "it to .csv",
                path=path,
            )
    if not any(m.filename.lstrip("/").startswith("xl/") for m in members):
        raise QatuneError(f"is a zip archive, not an Excel workbook; use {SUPPORTED}", path=path)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."
