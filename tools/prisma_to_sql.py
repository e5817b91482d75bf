#!/usr/bin/env python3
"""Writes src/keys/schema.sql: the LiteLLM tables LLMux uses, as PostgreSQL DDL, from LiteLLM's
own schema.prisma (in the litellm wheel: `pip download litellm==1.110.2 --no-deps`, then
`litellm/proxy/schema.prisma`). Prisma's PostgreSQL mapping: String TEXT, String[] TEXT[],
Json JSONB, Float DOUBLE PRECISION, Int INTEGER, BigInt BIGINT, DateTime TIMESTAMP(3),
Boolean BOOLEAN; `?` nullable; @default(now()) CURRENT_TIMESTAMP; uuid()/cuid() defaults are the
client's, not the database's. Relations are left out (no foreign keys: LLMux never deletes).

Usage: tools/prisma_to_sql.py path/to/schema.prisma > src/keys/schema.sql
"""
import re
import sys

TABLES = ["LiteLLM_VerificationToken", "LiteLLM_TeamTable", "LiteLLM_UserTable", "LiteLLM_SpendLogs"]
TYPES = {"String": "TEXT", "Json": "JSONB", "Float": "DOUBLE PRECISION", "Int": "INTEGER",
         "BigInt": "BIGINT", "DateTime": "TIMESTAMP(3)", "Boolean": "BOOLEAN"}


def models(text):
    for m in re.finditer(r"^model (\w+) \{(.*?)^\}", text, re.S | re.M):
        yield m.group(1), m.group(2)


def default_sql(attr, base, is_list):
    m = re.search(r'@default\s*\((.*)\)', attr)
    if not m:
        return None
    v = m.group(1).strip()
    # The default's own closing parenthesis: balance them.
    depth, out = 0, ""
    for ch in v:
        if ch == "(":
            depth += 1
        if ch == ")":
            if depth == 0:
                break
            depth -= 1
        out += ch
    v = out.strip()
    if v in ("uuid()", "cuid()"):
        return None
    if v == "now()":
        return "CURRENT_TIMESTAMP"
    if is_list and v == "[]":
        return "ARRAY[]::TEXT[]"
    if base == "Json":
        return "'" + v.strip('"').replace("'", "''") + "'"
    if base == "String":
        return "'" + v.strip('"').replace("'", "''") + "'"
    if base == "Float" and re.fullmatch(r"-?\d+", v):
        return v + ".0"
    return v


def main():
    text = open(sys.argv[1]).read()
    out = ["-- The LiteLLM tables LLMux reads and writes (LiteLLM 1.110.2's schema.prisma),",
           "-- written by tools/prisma_to_sql.py. `llmux db migrate` runs this on an empty database.",
           ""]
    found = dict(models(text))
    for table in TABLES:
        body = found[table]
        cols, indexes, pk = [], [], None
        for line in body.splitlines():
            line = line.split("//")[0].strip()
            if not line:
                continue
            if line.startswith("@@index"):
                fields = re.search(r"\[(.*?)\]", line).group(1)
                names = [f.strip() for f in fields.split(",")]
                indexes.append(names)
                continue
            if line.startswith("@@"):
                continue
            parts = line.split(None, 2)
            name, typ = parts[0], parts[1]
            attr = parts[2] if len(parts) > 2 else ""
            base = typ.rstrip("?[]")
            if base not in TYPES:
                continue  # a relation
            is_list = typ.endswith("[]")
            nullable = typ.endswith("?")
            sql = TYPES[base] + ("[]" if is_list else "")
            col = f'    "{name}" {sql}'
            if not nullable and not is_list:
                col += " NOT NULL"
            d = default_sql(attr, base, is_list)
            if d is not None:
                col += f" DEFAULT {d}"
            if "@id" in attr.split():
                pk = name
            if "@unique" in attr:
                indexes.append(("unique", name))
            cols.append(col)
        cols.append(f'    CONSTRAINT "{table}_pkey" PRIMARY KEY ("{pk}")')
        out.append(f'CREATE TABLE "{table}" (')
        out.append(",\n".join(cols))
        out.append(");")
        for idx in indexes:
            if isinstance(idx, tuple):
                out.append(f'CREATE UNIQUE INDEX "{table}_{idx[1]}_key" ON "{table}"("{idx[1]}");')
            else:
                cols_sql = ", ".join(f'"{c}"' for c in idx)
                out.append(f'CREATE INDEX "{table}_{"_".join(idx)}_idx" ON "{table}"({cols_sql});')
        out.append("")
    print("\n".join(out))


main()
