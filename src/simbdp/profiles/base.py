"""The base of every profile and platform model: frozen, strict, documented fields.

Cheap to import, since every ``simbdp`` process and every batch worker imports the models
first thing: a model's validator is built when it first validates (``defer_build``; a
worker only unpickles profiles, it never builds one), and the fields' descriptions (their
attribute docstrings, as pydantic's ``use_attribute_docstrings`` reads them) come from one
parse of each module's source instead of one source lookup per class.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import sys
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints

__all__ = ["FileType", "Identifier", "Model"]


Identifier = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
FileType = Literal["csv", "json", "jsonl", "parquet"]


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    def __init__(self, /, **data: Any) -> None:
        cls = type(self)
        if data or cls.__pydantic_complete__ or not _plain(cls):
            super().__init__(**data)
            return
        # a default value made at class definition (``batch: BatchLimits = BatchLimits()``):
        # its defaults as they are, as validating nothing gives them (pydantic does not
        # validate defaults), without building the validator in every importing process
        made = cls.model_construct()
        for attr in ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__",
                     "__pydantic_private__"):
            object.__setattr__(self, attr, getattr(made, attr))

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        # before any validator or JSON schema is built (defer_build): both see them
        super().__pydantic_init_subclass__(**kwargs)
        docs = _attribute_docs(cls.__module__).get(cls.__qualname__, {})
        for name, info in cls.__pydantic_fields__.items():
            if info.description is None and name in docs:
                info.description = docs[name]


@cache
def _plain(cls: type[Model]) -> bool:
    """Every field has a default, and no validator, serializer or computed field could make
    an instance without input differ from its defaults."""
    decorators = cls.__pydantic_decorators__
    return not any(getattr(decorators, f.name) for f in dataclasses.fields(decorators)) and all(
        not info.is_required() for info in cls.__pydantic_fields__.values())


@cache
def _attribute_docs(module: str) -> dict[str, dict[str, str]]:
    """The attribute docstrings of each class of ``module`` (by qualified name)."""
    path = getattr(sys.modules.get(module), "__file__", None)
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))  # type: ignore[arg-type]
    except (OSError, TypeError, SyntaxError, UnicodeDecodeError):
        return {}
    found: dict[str, dict[str, str]] = {}

    def classes(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                visitor = _Docstrings()
                visitor.generic_visit(node)
                found[prefix + node.name] = visitor.attrs
                classes(node.body, f"{prefix}{node.name}.")

    classes(tree.body, "")
    return found


class _Docstrings(ast.NodeVisitor):
    """A string right after an annotated attribute documents it (pydantic's own rule:
    ``pydantic._internal._docs_extraction.DocstringVisitor``)."""

    def __init__(self) -> None:
        self.target: str | None = None
        self.attrs: dict[str, str] = {}
        self.previous: type[ast.AST] | None = None

    def visit(self, node: ast.AST) -> Any:
        result = super().visit(node)
        self.previous = type(node)
        return result

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if isinstance(node.target, ast.Name):
            self.target = node.target.id

    def visit_Expr(self, node: ast.Expr) -> None:
        if (isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
                and self.previous is ast.AnnAssign):
            if self.target:
                self.attrs[self.target] = inspect.cleandoc(node.value.value)
            self.target = None

    # a nested class or function's attributes are not the class's
    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        pass

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        pass

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        pass
