"""``[[migrations]]``: replay Cloudflare-style class migrations in order.

Entries (``tag`` plus ``new_classes``, ``new_sqlite_classes``,
``renamed_classes = [{from = "A", to = "B"}]``, ``deleted_classes``) are
replayed in order, as Cloudflare does. Without any migration every bound
class counts as created; with migrations every bound class must be alive
after them (a typo or a forgotten migration is an error). ``new_classes``
and ``new_sqlite_classes`` mean the same here: every dotrio object is
SQLite-backed.

A class name is also its *storage namespace*: the directory
``data_dir/<namespace>/`` and the key its ids are derived from. A renamed
class keeps its first name as its namespace (``Runtime(namespace_names=...)``)
and nothing moves on disk. Moving the directory instead would not keep the
objects: ``id_from_name`` depends on the namespace, so the same name would
reach a different id. Hence a name that is still some class's namespace (or
was a deleted class's) cannot be given to a new class.

A deleted class refuses to start while ``data_dir/<namespace>/`` still holds
object databases (checked by the loader, which owns the file system).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._schema import MIGRATION_KEYS, Checker, MigrationConfig, class_part

__all__ = ["Replayed", "replay_migrations"]


@dataclass
class Replayed:
    """The result of replaying ``[[migrations]]``."""

    migrations: tuple[MigrationConfig, ...] = ()
    #: live class name -> its storage namespace
    alive: dict[str, str] = field(default_factory=dict)
    #: deleted classes as (namespace, key that deleted it, class name)
    deleted: list[tuple[str, str, str]] = field(default_factory=list)
    #: False when a migration was invalid: ``alive`` may then be incomplete
    #: and bindings are not checked against it (that would only add noise).
    complete: bool = True


def replay_migrations(check: Checker, value: Any) -> Replayed:
    """Validate and replay ``value`` (the ``migrations`` array)."""
    result = Replayed()
    if not isinstance(value, list):
        result.complete = False
        with check.guard():
            check.fail("migrations", "an array of tables ([[migrations]])", value)
        return result
    # namespace -> why it is taken, for every namespace ever used
    taken: dict[str, str] = {}
    tags: set[str] = set()
    out = []
    for i, item in enumerate(value):
        errors_before = len(check.errors)
        with check.guard():
            out.append(_replay_one(check, f"migrations[{i}]", item, result, taken, tags))
        if len(check.errors) != errors_before:
            result.complete = False
    result.migrations = tuple(out)
    return result


def _replay_one(
    check: Checker, base: str, item: Any, result: Replayed, taken: dict[str, str], tags: set[str]
) -> MigrationConfig:
    alive = result.alive
    table = check.table(base, item)
    if "transferred_classes" in table:
        with check.guard():
            check.fail(f"{base}.transferred_classes", "no transferred_classes (dotrio hosts one script's classes)")
    for key in table:
        if key not in MIGRATION_KEYS and key != "transferred_classes":
            with check.guard():
                check.unknown(f"{base}.{key}", sorted(MIGRATION_KEYS))
    tag = "?"
    with check.guard():
        if "tag" not in table:
            check.fail(f"{base}.tag", "a tag (a non-empty string unique among migrations)")
        tag = check.string(f"{base}.tag", table["tag"])
        if tag in tags:
            check.fail(f"{base}.tag", "a tag unique among migrations", tag, "used by an earlier migration")
        tags.add(tag)

    created: dict[str, tuple[str, ...]] = {"new_classes": (), "new_sqlite_classes": ()}
    for key in created:
        with check.guard():
            names = check.names(f"{base}.{key}", table.get(key, []))
            created[key] = names
            for j, cname in enumerate(names):
                where = f"{base}.{key}[{j}]"
                with check.guard():
                    if cname in alive:
                        check.fail(where, "a class that does not exist yet", cname,
                                   "it was created by an earlier migration")
                    if cname in taken:
                        check.fail(where, "a class name not used as a storage namespace", cname,
                                   f"{taken[cname]}; choose another class name")
                    alive[cname] = cname
                    taken[cname] = f"it is the storage namespace of class {cname!r}"

    renames: list[tuple[str, str]] = []
    renames_raw = table.get("renamed_classes", [])
    with check.guard():
        if not isinstance(renames_raw, list):
            check.fail(f"{base}.renamed_classes", "an array of {from = \"Old\", to = \"New\"} tables", renames_raw)
        for j, entry in enumerate(renames_raw):
            with check.guard():
                renames.append(_rename(check, f"{base}.renamed_classes[{j}]", entry, alive, taken, tag))

    deletes: tuple[str, ...] = ()
    with check.guard():
        deletes = check.names(f"{base}.deleted_classes", table.get("deleted_classes", []))
        for j, cname in enumerate(deletes):
            where = f"{base}.deleted_classes[{j}]"
            with check.guard():
                if cname not in alive:
                    check.fail(where, "a class that exists (created and not deleted by earlier migrations)", cname)
                ns = alive.pop(cname)
                taken[ns] = f"it held the objects of class {cname!r}, deleted in migration {tag!r}"
                result.deleted.append((ns, where, cname))

    return MigrationConfig(
        tag=tag,
        new_classes=created["new_classes"],
        new_sqlite_classes=created["new_sqlite_classes"],
        renamed_classes=tuple(renames),
        deleted_classes=deletes,
    )


def _rename(
    check: Checker, where: str, entry: Any, alive: dict[str, str], taken: dict[str, str], tag: str
) -> tuple[str, str]:
    entry = check.table(where, entry)
    for key in entry:
        if key not in ("from", "to"):
            with check.guard():
                check.unknown(f"{where}.{key}", ("from", "to"))
    if "from" not in entry or "to" not in entry:
        check.fail(where, "a table with both 'from' and 'to'", entry)
    old = class_part(check, f"{where}.from", entry["from"])
    new = class_part(check, f"{where}.to", entry["to"])
    if old not in alive:
        check.fail(f"{where}.from", "a class created by an earlier migration", old)
    if new in alive:
        check.fail(f"{where}.to", "a class name not in use", new, "that class already exists")
    # The new name keeps the old namespace; the old name stays taken, so a
    # later class called like it cannot reach these objects by accident.
    ns = alive.pop(old)
    alive[new] = ns
    taken[ns] = f"it is the storage namespace of class {new!r} (renamed from {old!r} in migration {tag!r})"
    return old, new
