#!/usr/bin/env python3
"""Regenerate pricing/catalog.json, Tollgate's vendored price catalog.

Usage:
    python3 scripts/update_pricing.py [path/to/prices.json] [--as-of YYYY-MM-DD]

Input is the `prices.json` shipped with the MIT-licensed genai-prices dataset
(pydantic/genai-prices; by default the copy cargo extracts for the
`genai-prices` crate).  Only the `openai` and `openrouter` providers are kept,
flattened into a simpler schema that the Rust code loads with include_str!:

  * the price list effective on the --as-of date (default: today, UTC) is
    chosen for models whose prices changed over time;
  * `match` clauses are reduced to exact names and name prefixes;
  * tiered prices become a base price set plus one full price set per
    input-token threshold;
  * price variants (batch / flex / priority) are ignored: we price the default
    tier only.

Prices are never converted to float: the JSON is parsed with Decimal and every
price is written as a plain decimal string ("2.5", "0.00001", never "1e-05").

Hand-written entries from pricing/supplement.json (same schema) are merged in
last and replace a dataset entry with the same provider and id.

Anything that could not be represented (dropped price keys, match clauses,
models without a usable price) is summarised on stderr.
"""

import argparse
import collections
import datetime
import decimal
import glob
import json
import os
import re
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SUPPLEMENT_PATH = REPO_ROOT / "pricing" / "supplement.json"
CATALOG_PATH = REPO_ROOT / "pricing" / "catalog.json"

GENAI_PRICES_VERSION = "0.2.1"
DEFAULT_PRICES_JSON = (
    "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/"
    f"genai-prices-{GENAI_PRICES_VERSION}/data/prices.json"
)
SOURCE = (
    f"genai-prices {GENAI_PRICES_VERSION} (pydantic/genai-prices, MIT licence, "
    "see pricing/LICENSE-genai-prices)"
)

PROVIDERS = ("openai", "openrouter")

# Output price keys, in the order they are written.  Units: USD per million
# tokens for *_mtok, per thousand requests for requests_kcount, per hour of
# input audio for input_audio_hour, per million input characters for
# input_mchars.
OUTPUT_KEYS = (
    "input_mtok",
    "cache_read_mtok",
    "cache_write_mtok",
    "output_mtok",
    "input_audio_mtok",
    "cache_audio_read_mtok",
    "output_audio_mtok",
    "input_image_mtok",
    "cache_image_read_mtok",
    "output_image_mtok",
    "requests_kcount",
    "input_audio_hour",
    "input_mchars",
)

# Dataset key -> output key.  Keys missing here are dropped (and reported).
KEY_MAP = {key: key for key in OUTPUT_KEYS if key != "input_audio_hour"}
KEY_MAP["audio_hours"] = "input_audio_hour"
KEY_MAP["input_audio_hours"] = "input_audio_hour"
# When two dataset keys map to the same output key, the more specific one wins.
KEY_PRIORITY = {"input_audio_hours": 1, "audio_hours": 0}

PLAIN_DECIMAL = re.compile(r"^[0-9]+(\.[0-9]+)?$")


class Report:
    """Collects everything that was dropped or looked odd, printed at the end."""

    def __init__(self):
        self.dropped_keys = collections.defaultdict(list)  # key -> [model]
        self.dropped_clauses = []  # (model, clause json)
        self.omitted_models = []  # (model, reason)
        self.notes = []  # free-form remarks

    def print(self, out=sys.stderr):
        if self.dropped_keys:
            print("dropped price keys:", file=out)
            for key in sorted(self.dropped_keys):
                models = self.dropped_keys[key]
                sample = ", ".join(models[:4]) + (", ..." if len(models) > 4 else "")
                print(f"  {key}: {len(models)} model(s) ({sample})", file=out)
        if self.dropped_clauses:
            print("dropped match clauses (model stays matchable by its id):", file=out)
            for model, clause in self.dropped_clauses:
                print(f"  {model}: {clause}", file=out)
        by_reason = collections.defaultdict(list)
        for model, reason in self.omitted_models:
            by_reason[reason].append(model)
        for reason, models in sorted(by_reason.items()):
            print(f"omitted {len(models)} model(s), {reason}:", file=out)
            print(textwrap.fill(", ".join(models), width=100, initial_indent="  ",
                                subsequent_indent="  ", break_on_hyphens=False), file=out)
        for note in self.notes:
            print(f"note: {note}", file=out)


# --------------------------------------------------------------------------
# Decimal handling


def decimal_str(value):
    """Plain decimal string for a Decimal: no exponent, no trailing zeros."""
    if not isinstance(value, decimal.Decimal) or not value.is_finite():
        raise ValueError(f"not a finite decimal price: {value!r}")
    if value < 0:
        raise ValueError(f"negative price: {value}")
    text = format(value, "f")  # 'f' never uses exponent notation
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def as_int(value, what):
    """An integer-valued Decimal (token counts, context windows) as int."""
    if value != value.to_integral_value():
        raise ValueError(f"{what} is not an integer: {value}")
    return int(value)


# --------------------------------------------------------------------------
# Effective price list


def choose_prices(model_id, prices, as_of, report):
    """Return (price dict, effective_from) in effect on `as_of`.

    `prices` is either a plain dict or a list of {constraint, prices} entries.
    The latest entry whose start_date <= as_of wins; an entry without a
    constraint counts as the oldest.  Later entries win ties, as in
    genai-prices itself.
    """
    if isinstance(prices, dict):
        return prices, None
    best, best_rank = None, None
    for entry in prices:
        constraint = entry.get("constraint")
        if constraint is None:
            rank = datetime.date.min
        elif set(constraint) == {"start_date"}:
            rank = datetime.date.fromisoformat(constraint["start_date"])
            if rank > as_of:
                continue  # not yet in effect
        else:
            report.notes.append(f"{model_id}: unsupported price constraint {constraint}, entry skipped")
            continue
        if best_rank is None or rank >= best_rank:
            best, best_rank = entry, rank
    if best is None:
        # Nothing in effect yet: genai-prices falls back to the first entry.
        best = prices[0]
        report.notes.append(f"{model_id}: no price entry effective on {as_of}, using the first one")
    constraint = best.get("constraint")
    return best["prices"], (constraint["start_date"] if constraint else None)


# --------------------------------------------------------------------------
# Prices and tiers


def normalise_value(model_id, key, value):
    """A dataset price value as ('flat', Decimal) or ('tiered', base, [(start, price)])."""
    if isinstance(value, decimal.Decimal):
        return ("flat", value)
    if isinstance(value, dict) and set(value) == {"base", "tiers"}:
        tiers = sorted(
            (as_int(tier["start"], f"{model_id} {key} tier start"), tier["price"])
            for tier in value["tiers"]
        )
        return ("tiered", value["base"], tiers)
    raise ValueError(f"{model_id}: unsupported value for {key}: {value!r}")


def price_at(value, threshold):
    """The price of a normalised value once input tokens exceed `threshold`
    (threshold None means the base price)."""
    if value[0] == "flat":
        return value[1]
    price = value[1]
    for start, tier_price in value[2]:
        if threshold is not None and start <= threshold:
            price = tier_price
    return price


def convert_prices(model_id, raw_prices, report):
    """Map dataset prices to (prices, tiers) in the output schema."""
    values, origin = {}, {}
    for key, raw in raw_prices.items():
        out_key = KEY_MAP.get(key)
        if out_key is None:
            report.dropped_keys[key].append(model_id)
            continue
        value = normalise_value(model_id, key, raw)
        if out_key in values:
            if values[out_key] != value:
                report.notes.append(
                    f"{model_id}: {origin[out_key]} and {key} disagree for {out_key}; "
                    f"keeping the more specific key"
                )
            if KEY_PRIORITY.get(key, 0) <= KEY_PRIORITY.get(origin[out_key], 0):
                continue
        values[out_key] = value
        origin[out_key] = key

    def price_set(threshold):
        return {
            key: decimal_str(price_at(values[key], threshold))
            for key in OUTPUT_KEYS
            if key in values
        }

    # Every distinct threshold across keys becomes one tier carrying the full
    # price set that applies above it.
    thresholds = sorted({start for v in values.values() if v[0] == "tiered" for start, _ in v[2]})
    tiers = [{"above_input_tokens": t, "prices": price_set(t)} for t in thresholds]
    return price_set(None), tiers


# --------------------------------------------------------------------------
# Match clauses

REGEX_META = set(".^$*+?()[]{}|\\")


def regex_literal(text):
    """Unescape a regex fragment that is a pure literal, else None."""
    out, i = [], 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            if i + 1 < len(text) and not text[i + 1].isalnum():
                out.append(text[i + 1])  # escaped punctuation, e.g. \. or \-
                i += 2
                continue
            return None  # \d, \w, ... are classes, not literals
        if char in REGEX_META:
            return None
        out.append(char)
        i += 1
    return "".join(out)


def split_alternation(text):
    """Split on top-level '|' (outside parentheses / brackets), else None if unbalanced."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts if depth == 0 else None


def expand_regex(pattern):
    """Reduce a regex to ([exact], [prefix]) if it is equivalent to them, else None.

    genai-prices matches regexes unanchored (search), so only patterns anchored
    with '^' qualify.  Supported shapes: ^lit$, ^lit, ^lit.*, ^(?:a|b)$,
    ^(a|b), and top-level alternations of those.
    """
    branches = split_alternation(pattern)
    if branches is None:
        return None
    if len(branches) > 1:
        exact, prefixes = [], []
        for branch in branches:
            result = expand_regex(branch)
            if result is None:
                return None
            exact += result[0]
            prefixes += result[1]
        return exact, prefixes
    body = pattern
    if not body.startswith("^"):
        return None
    body = body[1:]
    anchored_end = body.endswith("$") and not body.endswith("\\$")
    if anchored_end:
        body = body[:-1]
    if body.endswith(".*") and not body.endswith("\\.*"):
        body = body[:-2]  # ^lit.* and ^lit.*$ are the same as ^lit
        anchored_end = False
    # A single group of literal alternatives: ^(a|b)$ or ^(?:a|b)$.
    group = re.fullmatch(r"\((?:\?:)?(.*)\)", body)
    alternatives = None
    if group:
        alternatives = split_alternation(group.group(1))
    if alternatives is None:
        alternatives = [body]
    literals = [regex_literal(alt) for alt in alternatives]
    if any(lit is None for lit in literals):
        return None
    return (literals, []) if anchored_end else ([], literals)


def reduce_match(model_id, clause, exact, prefixes, report):
    """Collect exact names and prefixes reachable through or-clauses.

    Anything else is dropped and reported: an `equals`/`starts_with` nested in
    a multi-clause `and` would over-match on its own, so it is not collected.
    """
    if not isinstance(clause, dict) or len(clause) != 1:
        report.dropped_clauses.append((model_id, json.dumps(clause, default=str)))
        return
    (op, arg), = clause.items()
    if op == "or":
        for sub in arg:
            reduce_match(model_id, sub, exact, prefixes, report)
    elif op == "and" and len(arg) == 1:
        reduce_match(model_id, arg[0], exact, prefixes, report)
    elif op == "equals":
        exact.append(arg.lower())  # genai-prices compares case-insensitively
    elif op == "starts_with":
        prefixes.append(arg.lower())
    elif op == "regex" and expand_regex(arg) is not None:
        more_exact, more_prefixes = expand_regex(arg)
        exact.extend(more_exact)
        prefixes.extend(more_prefixes)
    else:
        report.dropped_clauses.append((model_id, json.dumps(clause, default=str)))


def dedupe(items):
    return list(dict.fromkeys(items))


# --------------------------------------------------------------------------
# Conversion


def convert_model(provider, model, as_of, report):
    """One dataset model in the output schema, or None if it has no usable price."""
    label = f"{provider}:{model['id']}"
    exact, prefixes = [model["id"]], []
    reduce_match(label, model["match"], exact, prefixes, report)
    raw_prices, effective_from = choose_prices(label, model["prices"], as_of, report)
    prices, tiers = convert_prices(label, raw_prices, report)
    if not prices:
        # Mostly OpenRouter ":free" variants, whose dataset price dict is empty.
        reason = "dataset lists no prices" if not raw_prices else "only unsupported price keys"
        report.omitted_models.append((label, reason))
        return None
    window = model.get("context_window")
    return {
        "provider": provider,
        "id": model["id"],
        "exact": dedupe(exact),
        "prefixes": dedupe(prefixes),
        "context_window": None if window is None else as_int(window, f"{label} context_window"),
        "effective_from": effective_from,
        "prices": prices,
        "tiers": tiers,
    }


def check_entry(entry):
    """Validate one output entry (dataset-derived or hand-written)."""
    where = f"{entry.get('provider')}:{entry.get('id')}"
    required = ("provider", "id", "exact", "prefixes", "context_window", "effective_from", "prices", "tiers")
    missing = [key for key in required if key not in entry]
    if missing:
        raise ValueError(f"{where}: missing {missing}")
    if entry["provider"] not in PROVIDERS:
        raise ValueError(f"{where}: unknown provider")
    price_sets = [entry["prices"]] + [tier["prices"] for tier in entry["tiers"]]
    for prices in price_sets:
        for key, value in prices.items():
            if key not in OUTPUT_KEYS:
                raise ValueError(f"{where}: unknown price key {key}")
            if not isinstance(value, str) or not PLAIN_DECIMAL.match(value):
                raise ValueError(f"{where}: {key} is not a plain decimal string: {value!r}")
    for item in entry.get("per_image", []):
        if set(item) != {"size", "quality", "usd"} or item["quality"] not in ("standard", "hd"):
            raise ValueError(f"{where}: bad per_image item {item}")
        if not PLAIN_DECIMAL.match(item["usd"]):
            raise ValueError(f"{where}: per_image usd is not a plain decimal string: {item['usd']!r}")


def default_prices_json():
    """The path above, or any cargo-extracted genai-prices copy of this version."""
    if os.path.exists(DEFAULT_PRICES_JSON):
        return DEFAULT_PRICES_JSON
    cargo_home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
    found = sorted(glob.glob(f"{cargo_home}/registry/src/*/genai-prices-{GENAI_PRICES_VERSION}/data/prices.json"))
    return found[0] if found else DEFAULT_PRICES_JSON


def write_catalog(path, catalog):
    """Write indented JSON with one model per line (diff-friendly, compact)."""
    lines = ["{"]
    lines.append(f' "source": {json.dumps(catalog["source"])},')
    lines.append(f' "as_of": {json.dumps(catalog["as_of"])},')
    lines.append(' "models": [')
    models = [json.dumps(model, separators=(", ", ": ")) for model in catalog["models"]]
    lines.append(",\n".join(f"  {model}" for model in models))
    lines.append(" ]")
    lines.append("}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prices_json", nargs="?", default=default_prices_json(),
                        help="genai-prices data/prices.json")
    parser.add_argument("--as-of", type=datetime.date.fromisoformat,
                        default=datetime.datetime.now(datetime.timezone.utc).date(),
                        help="date whose effective prices are taken (default: today, UTC)")
    args = parser.parse_args()

    if f"genai-prices-{GENAI_PRICES_VERSION}" not in args.prices_json:
        print(f"warning: {args.prices_json} may not be genai-prices {GENAI_PRICES_VERSION}; "
              f"update GENAI_PRICES_VERSION if the version changed", file=sys.stderr)

    # Decimal for every number: no float ever touches a price.
    with open(args.prices_json, encoding="utf-8") as f:
        dataset = json.load(f, parse_float=decimal.Decimal, parse_int=decimal.Decimal)
    with open(SUPPLEMENT_PATH, encoding="utf-8") as f:
        supplement = json.load(f, parse_float=decimal.Decimal, parse_int=decimal.Decimal)

    report = Report()
    entries = {}
    for provider in dataset:
        if provider["id"] not in PROVIDERS:
            continue
        for model in provider["models"]:
            entry = convert_model(provider["id"], model, args.as_of, report)
            if entry is not None:
                entries[(entry["provider"], entry["id"])] = entry

    # Hand-written entries win over the dataset.
    for entry in supplement["models"]:
        if isinstance(entry.get("context_window"), decimal.Decimal):
            entry["context_window"] = as_int(entry["context_window"], "context_window")
        for tier in entry.get("tiers", []):
            tier["above_input_tokens"] = as_int(tier["above_input_tokens"], "above_input_tokens")
        if not entry.get("per_image", True):
            del entry["per_image"]  # only written when non-empty
        key = (entry["provider"], entry["id"])
        if key in entries:
            report.notes.append(f"supplement replaces dataset entry {key[0]}:{key[1]}")
        entries[key] = entry

    models = [entries[key] for key in sorted(entries)]
    for entry in models:
        check_entry(entry)

    write_catalog(CATALOG_PATH, {"source": SOURCE, "as_of": args.as_of.isoformat(), "models": models})

    report.print()
    counts = collections.Counter(entry["provider"] for entry in models)
    summary = ", ".join(f"{provider}: {counts[provider]}" for provider in PROVIDERS)
    print(f"wrote {CATALOG_PATH.relative_to(REPO_ROOT)} ({len(models)} models; {summary})", file=sys.stderr)


if __name__ == "__main__":
    main()
