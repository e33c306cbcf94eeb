"""Caffe's message classes, built at import time from our own ``caffe.proto`` (no protoc).

A small parser reads the proto2 subset that ``caffe.proto`` uses (messages, nested enums,
optional/repeated scalar, enum and message fields, ``default`` and ``packed`` options) into a
``FileDescriptorProto``; protobuf's ``message_factory`` then makes the classes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PROTO_PATH = Path(__file__).with_name("caffe.proto")
PACKAGE = "caffe"

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "double": _F.TYPE_DOUBLE,
    "float": _F.TYPE_FLOAT,
    "int64": _F.TYPE_INT64,
    "uint64": _F.TYPE_UINT64,
    "int32": _F.TYPE_INT32,
    "uint32": _F.TYPE_UINT32,
    "bool": _F.TYPE_BOOL,
    "string": _F.TYPE_STRING,
    "bytes": _F.TYPE_BYTES,
}
_TOKEN = re.compile(r'"[^"]*"|\'[^\']*\'|[A-Za-z_][\w.]*|-?[\d.]+(?:[eE][-+]?\d+)?|[{}\[\]=;,]')


def _tokens(text: str) -> list[str]:
    text = re.sub(r"//[^\n]*", "", text)
    return _TOKEN.findall(text)


class _Parser:
    def __init__(self, toks: list[str]) -> None:
        self.t = toks
        self.i = 0

    def next(self) -> str:
        tok = self.t[self.i]
        self.i += 1
        return tok

    def expect(self, tok: str) -> None:
        got = self.next()
        if got != tok:
            raise ValueError(f"caffe.proto: expected {tok!r}, got {got!r} at token {self.i}")

    def enum(self, e: descriptor_pb2.EnumDescriptorProto) -> None:
        e.name = self.next()
        self.expect("{")
        while (tok := self.next()) != "}":
            v = e.value.add(name=tok)
            self.expect("=")
            v.number = int(self.next())
            self.expect(";")

    def message(self, m: descriptor_pb2.DescriptorProto) -> None:
        m.name = self.next()
        self.expect("{")
        while (tok := self.next()) != "}":
            if tok == "enum":
                self.enum(m.enum_type.add())
                continue
            if tok == "message":
                self.message(m.nested_type.add())
                continue
            f = m.field.add()
            f.label = _F.LABEL_REPEATED if tok == "repeated" else _F.LABEL_OPTIONAL
            typ = self.next()
            f.name = self.next()
            self.expect("=")
            f.number = int(self.next())
            if typ in _SCALARS:
                f.type = _SCALARS[typ]
            else:
                f.type_name = typ  # resolved below (message or enum)
            tok = self.next()
            if tok == "[":
                while True:
                    key = self.next()
                    self.expect("=")
                    val = self.next()
                    if key == "packed":
                        f.options.packed = val == "true"
                    elif key == "default":
                        f.default_value = val.strip("\"'")
                    if self.next() == "]":
                        break
                tok = self.next()
            if tok != ";":
                raise ValueError(f"caffe.proto: expected ';' after field {f.name}")

    def file(self) -> descriptor_pb2.FileDescriptorProto:
        fd = descriptor_pb2.FileDescriptorProto(name="zoo_caffe.proto", package=PACKAGE, syntax="proto2")
        while self.i < len(self.t):
            tok = self.next()
            if tok == "syntax":
                self.expect("=")
                self.next()
                self.expect(";")
            elif tok == "package":
                self.next()
                self.expect(";")
            elif tok == "message":
                self.message(fd.message_type.add())
            elif tok == "enum":
                self.enum(fd.enum_type.add())
            else:
                raise ValueError(f"caffe.proto: unexpected {tok!r}")
        return fd


def _resolve(fd: descriptor_pb2.FileDescriptorProto) -> None:
    """Turn bare type names into fully qualified message/enum references (innermost scope first)."""
    kinds: dict[str, int] = {}

    def collect(prefix: str, msgs: Any, enums: Any) -> None:
        for e in enums:
            kinds[f"{prefix}.{e.name}"] = _F.TYPE_ENUM
        for m in msgs:
            kinds[f"{prefix}.{m.name}"] = _F.TYPE_MESSAGE
            collect(f"{prefix}.{m.name}", m.nested_type, m.enum_type)

    collect(f".{PACKAGE}", fd.message_type, fd.enum_type)

    def fix(prefix: str, msgs: Any) -> None:
        for m in msgs:
            scope = f"{prefix}.{m.name}"
            for f in m.field:
                if not f.type_name or f.type_name.startswith("."):
                    continue
                parts = scope.split(".")
                for k in range(len(parts), 1, -1):
                    cand = ".".join(parts[:k]) + "." + f.type_name
                    if cand in kinds:
                        f.type_name = cand
                        f.type = kinds[cand]
                        break
                else:
                    raise ValueError(f"caffe.proto: unknown type {f.type_name} in {scope}")
            fix(scope, m.nested_type)

    fix(f".{PACKAGE}", fd.message_type)


def build_file_descriptor(path: Path = PROTO_PATH) -> descriptor_pb2.FileDescriptorProto:
    """Parse our caffe.proto into a FileDescriptorProto."""
    fd = _Parser(_tokens(path.read_text())).file()
    _resolve(fd)
    return fd


_pool = descriptor_pool.DescriptorPool()
_fdesc = _pool.Add(build_file_descriptor())


def message_class(name: str) -> Any:
    """The generated class for ``caffe.<name>``."""
    return message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))


NetParameter = message_class("NetParameter")
LayerParameter = message_class("LayerParameter")
V1LayerParameter = message_class("V1LayerParameter")
BlobProto = message_class("BlobProto")
BlobShape = message_class("BlobShape")
