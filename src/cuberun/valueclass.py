"""A fast stand-in for `dataclasses.dataclass`, for start-up time.

`dataclasses` generates every class's methods with exec() and imports `inspect` (and with it
`ast`, `dis`, `tokenize`): about 1 ms per class plus 10 ms, paid at every cuberun start. This
module supports what cuberun uses — `@dataclass`, `@dataclass(frozen=True)`, `field(default=...)`,
`field(default_factory=...)`, inheritance, `replace()` — with generic methods built once. Type
checkers see the real `dataclasses` (the TYPE_CHECKING branch), so typing is unchanged. Anything
else `dataclasses` offers (`order=`, `init=False`, `slots=`, `__post_init__`, `field(compare=...)`)
is refused with a TypeError when the class is defined, never silently ignored: use the real
`dataclasses` for such a class.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from dataclasses import dataclass, field, replace
    from typing import Any
else:
    _MISSING = object()

    class FrozenInstanceError(AttributeError):
        pass

    class _Field:
        __slots__ = ("default", "factory")

        def __init__(self, default: Any = _MISSING, factory: Any = None) -> None:
            self.default = default
            self.factory = factory

    def field(*, default: Any = _MISSING, default_factory: Any = None, **unsupported: Any) -> Any:
        if unsupported:
            raise TypeError(f"valueclass.field() does not support {', '.join(sorted(unsupported))}: use dataclasses.field")
        if default is not _MISSING and default_factory is not None:
            raise TypeError("cannot specify both default and default_factory")
        return _Field(default, default_factory)

    def _fields_of(cls: type) -> dict[str, _Field]:
        found: dict[str, _Field] = {}
        for base in reversed(cls.__mro__[1:]):
            found.update(base.__dict__.get("__value_fields__", {}))
        for name, annotation in cls.__dict__.get("__annotations__", {}).items():  # noqa: RUF063 - no `inspect` at start-up
            text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
            if text.startswith(("ClassVar", "typing.ClassVar")):
                continue
            value = cls.__dict__.get(name, _MISSING)
            if isinstance(value, _Field):
                spec = value
                if value.default is _MISSING:
                    delattr(cls, name)
                else:
                    setattr(cls, name, value.default)
            else:
                spec = _Field(value)
            found.pop(name, None)
            found[name] = spec
        return found

    def _init(self: Any, *args: Any, **kwargs: Any) -> None:
        fields = type(self).__value_fields__
        names = tuple(fields)
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__}() takes {len(names)} arguments, {len(args)} given")
        setter = object.__setattr__
        for name, value in zip(names, args, strict=False):
            if name in kwargs:
                raise TypeError(f"{type(self).__name__}() got multiple values for '{name}'")
            setter(self, name, value)
        for name in names[len(args) :]:
            if name in kwargs:
                value = kwargs.pop(name)
            else:
                spec = fields[name]
                if spec.factory is not None:
                    value = spec.factory()
                elif spec.default is not _MISSING:
                    value = spec.default
                else:
                    raise TypeError(f"{type(self).__name__}() missing argument '{name}'")
            setter(self, name, value)
        if kwargs:
            raise TypeError(f"{type(self).__name__}() got an unexpected argument '{next(iter(kwargs))}'")

    def _values(self: Any) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in type(self).__value_fields__)

    def _repr(self: Any) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in type(self).__value_fields__)
        return f"{type(self).__qualname__}({inner})"

    def _eq(self: Any, other: Any) -> Any:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return _values(self) == _values(other)

    def _hash(self: Any) -> int:
        return hash(_values(self))

    def _frozen_setattr(self: Any, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field '{name}'")

    def _frozen_delattr(self: Any, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field '{name}'")

    def dataclass(cls: Any = None, /, *, frozen: bool = False, **unsupported: Any) -> Any:
        if unsupported:
            raise TypeError(f"valueclass.dataclass() does not support {', '.join(sorted(unsupported))}: use dataclasses.dataclass")

        def wrap(cls: type) -> type:
            if "__post_init__" in cls.__dict__:
                raise TypeError(f"{cls.__qualname__}: valueclass.dataclass does not call __post_init__: use dataclasses.dataclass")
            cls.__value_fields__ = _fields_of(cls)  # type: ignore[attr-defined]
            cls.__match_args__ = tuple(cls.__value_fields__)  # type: ignore[attr-defined]
            cls.__init__ = _init  # type: ignore[misc]
            if "__repr__" not in cls.__dict__:
                cls.__repr__ = _repr  # type: ignore[assignment]
            if "__eq__" not in cls.__dict__:
                cls.__eq__ = _eq  # type: ignore[assignment]
                cls.__hash__ = _hash if frozen else None  # type: ignore[assignment]
            if frozen:
                cls.__setattr__ = _frozen_setattr  # type: ignore[assignment]
                cls.__delattr__ = _frozen_delattr  # type: ignore[assignment]
            return cls

        return wrap if cls is None else wrap(cls)

    def replace(obj: Any, /, **changes: Any) -> Any:
        values = {name: getattr(obj, name) for name in type(obj).__value_fields__}
        unknown = set(changes) - set(values)
        if unknown:
            raise TypeError(f"{type(obj).__name__} has no field {sorted(unknown)[0]!r}")
        values.update(changes)
        return type(obj)(**values)


__all__ = ["dataclass", "field", "replace"]
