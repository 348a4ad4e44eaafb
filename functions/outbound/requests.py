"""What an operator sends to place a call or create a campaign, validated.

The settings are pydantic models (a bad setting fails the whole request with a 422 naming it);
contacts are checked one by one, because one bad row of a 5,000-row list must not cost the other
4,999: :func:`parse_contacts` / :func:`parse_csv` return the good contacts and a
:class:`RowError` (row, number, reason) for each bad one, and nothing else is dropped.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from functions.outbound import windows
from functions.outbound.rate import MAX_CALLS_PER_SECOND, MIN_CALLS_PER_SECOND
from voicebridge.identifiers import E164_EXAMPLE, is_e164

MAX_CONTACTS = 5000  # one request; a DynamoDB batch write of this many fits the API's timeout
MAX_VARIABLES = 20
MAX_VALUE_CHARS = 500
MAX_NAME_CHARS = 100
VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
ASSISTANT_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")
CSV_COLUMNS = ("number", "name", "timezone")  # any other column is a variable of that name

MachineDetection = Literal["off", "hangup", "message"]


def _e164(value: str) -> str:
    if not is_e164(value):
        raise ValueError(f"{value!r} is not an E.164 number like {E164_EXAMPLE}")
    return value


def _assistant(value: str) -> str:
    if not ASSISTANT_ID.fullmatch(value):
        raise ValueError("assistantId must be 1-100 letters, digits, '-' or '_'")
    return value


def _zone(value: str) -> str:
    try:
        windows.zone(value)
    except windows.WindowError as exc:
        raise ValueError(str(exc)) from None
    return value


def variables_error(variables: Any) -> str | None:
    """Why ``variables`` cannot be template variables, or None if they can."""
    if not isinstance(variables, dict):
        return "variables must be an object"
    if len(variables) > MAX_VARIABLES:
        return f"at most {MAX_VARIABLES} variables"
    for name, value in variables.items():
        if not isinstance(name, str) or not VARIABLE_NAME.fullmatch(name):
            return (
                f"variable name {str(name)[:40]!r} is not a letter/underscore then letters/digits"
            )
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return f"variable {name!r} must be a string or a number"
        if len(str(value)) > MAX_VALUE_CHARS:
            return f"variable {name!r} is longer than {MAX_VALUE_CHARS} characters"
    return None


def _variables(value: dict[str, Any]) -> dict[str, str]:
    error = variables_error(value)
    if error:
        raise ValueError(error)
    return {k: str(v) for k, v in value.items()}


E164 = Annotated[str, AfterValidator(_e164)]
AssistantId = Annotated[str, AfterValidator(_assistant)]
Variables = Annotated[dict[str, Any], AfterValidator(_variables)]


class _Spec(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class CallOptions(_Spec):
    """What shapes one call: the same for a single call and every call of a campaign."""

    assistant_id: AssistantId | None = None
    from_number: E164 | None = Field(None, alias="from")
    first_message: str | None = Field(None, min_length=1, max_length=1000)
    variables: Variables = Field(default_factory=dict)
    machine_detection: MachineDetection = "off"
    voicemail_message: str | None = Field(None, min_length=1, max_length=1000)
    ring_timeout_seconds: int = Field(30, ge=5, le=600)  # Twilio's Timeout: 600 at most


class CreateCall(CallOptions):
    """``POST /calls``."""

    to: E164


class WindowSpec(_Spec):
    start: str
    end: str
    timezone: Annotated[str, AfterValidator(_zone)] = "UTC"

    @model_validator(mode="after")
    def _times(self) -> WindowSpec:
        try:
            windows.CallingWindow.parse(self.start, self.end)
        except windows.WindowError as exc:
            raise ValueError(str(exc)) from None
        return self

    def window(self) -> windows.CallingWindow:
        return windows.CallingWindow.parse(self.start, self.end)


class RetrySpec(_Spec):
    max: int = Field(0, ge=0, le=10)
    backoff_seconds: int = Field(300, ge=1, le=604_800)


class CreateCampaign(CallOptions):
    """``POST /campaigns``: settings, then contacts as a JSON list or as CSV text."""

    name: str | None = Field(None, max_length=MAX_NAME_CHARS)
    max_concurrent: int = Field(1, ge=1, le=1000)
    max_calls_per_second: float = Field(1.0, ge=MIN_CALLS_PER_SECOND, le=MAX_CALLS_PER_SECOND)
    window: WindowSpec | None = None
    retries: RetrySpec = Field(default_factory=RetrySpec)
    contacts: list[Any] | None = Field(None, max_length=MAX_CONTACTS)
    contacts_csv: str | None = Field(None, max_length=1024 * 1024)

    @model_validator(mode="after")
    def _one_list(self) -> CreateCampaign:
        if (self.contacts is None) == (self.contacts_csv is None):
            raise ValueError("give the contacts either as `contacts` (JSON) or `contactsCsv`")
        return self


@dataclass(frozen=True, slots=True)
class Contact:
    number: str
    name: str | None = None
    timezone: str | None = None
    variables: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RowError:
    row: int  # 1-based: the list position, or the CSV line (header = line 1)
    number: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"row": self.row, "number": self.number, "reason": self.reason}


def _contact(row: int, fields: Mapping[str, Any], seen: set[str]) -> Contact | RowError:
    number = fields.get("number")
    shown = str(number)[:40] if number is not None else None
    if not isinstance(number, str) or not number:
        return RowError(row, shown, "number is missing")
    if not is_e164(number):
        return RowError(row, shown, f"not an E.164 number like {E164_EXAMPLE}")
    if number in seen:
        return RowError(row, number, "duplicate number (already in this campaign)")
    name = fields.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME_CHARS):
        return RowError(row, number, f"name must be text of at most {MAX_NAME_CHARS} characters")
    zone = fields.get("timezone")
    if zone is not None:
        if not isinstance(zone, str):
            return RowError(row, number, "timezone must be an IANA name like America/New_York")
        try:
            windows.zone(zone)
        except windows.WindowError as exc:
            return RowError(row, number, str(exc))
    variables = fields.get("variables", {})
    error = variables_error(variables)
    if error:
        return RowError(row, number, error)
    seen.add(number)
    return Contact(number, name or None, zone or None, {k: str(v) for k, v in variables.items()})


def _sort(result: Contact | RowError, good: list[Contact], bad: list[RowError]) -> None:
    if isinstance(result, RowError):
        bad.append(result)
    else:
        good.append(result)


def parse_contacts(items: Iterable[Any]) -> tuple[list[Contact], list[RowError]]:
    """JSON contacts ``{"number", "name"?, "timezone"?, "variables"?}`` -> (good, bad rows)."""
    good: list[Contact] = []
    bad: list[RowError] = []
    seen: set[str] = set()
    allowed = {"number", "name", "timezone", "variables"}
    for row, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            bad.append(RowError(row, None, "a contact must be an object with a number"))
            continue
        unknown = sorted(set(item) - allowed)
        if unknown:
            number = item.get("number")
            shown = str(number)[:40] if number is not None else None
            bad.append(RowError(row, shown, f"unknown field {unknown[0][:40]!r}"))
            continue
        _sort(_contact(row, item, seen), good, bad)
    return good, bad


class CsvError(ValueError):
    """The CSV as a whole is unusable (no header, no number column, a bad column name)."""


def _csv_line(line: str) -> list[str]:
    """One physical line as CSV fields (csv.Error if it is not valid CSV on its own)."""
    return next(csv.reader([line], strict=True), [])


def parse_csv(text: str) -> tuple[list[Contact], list[RowError]]:
    """CSV with a header: ``number`` (required), ``name``, ``timezone``, and any other column
    is a template variable of that name. One contact per line (a quoted field may not span
    lines): a broken line, even an unterminated quote, costs that line only. Rows are reported
    by their line number."""
    lines = text.lstrip("\ufeff").splitlines()
    try:
        header = _csv_line(lines[0]) if lines else []
    except csv.Error as exc:
        raise CsvError(f"the header line is not valid CSV: {exc}") from None
    if not header:
        raise CsvError("the CSV is empty: it needs a header line naming a `number` column")
    columns = [name.strip() for name in header]
    if "number" not in columns:
        raise CsvError("the CSV header has no `number` column")
    for name in columns:
        if name not in CSV_COLUMNS and not VARIABLE_NAME.fullmatch(name):
            raise CsvError(f"column {name[:40]!r} is not a valid variable name")
    if len(set(columns)) != len(columns):
        raise CsvError("the CSV header names a column twice")
    good: list[Contact] = []
    bad: list[RowError] = []
    seen: set[str] = set()
    rows = 0
    for line, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue  # blank line
        rows += 1
        if rows > MAX_CONTACTS:
            bad.append(RowError(line, None, f"more than {MAX_CONTACTS} contacts in one request"))
            break
        try:
            values = _csv_line(raw)
        except csv.Error as exc:
            bad.append(RowError(line, None, f"malformed CSV: {exc}"))
            continue
        if len(values) != len(columns):
            number = dict(zip(columns, values, strict=False)).get("number")
            reason = f"expected {len(columns)} fields, got {len(values)}"
            bad.append(RowError(line, number.strip() if number else None, reason))
            continue
        cells = {name: value.strip() for name, value in zip(columns, values, strict=True)}
        fields = {
            "number": cells["number"],
            "name": cells.get("name") or None,
            "timezone": cells.get("timezone") or None,
            "variables": {k: v for k, v in cells.items() if k not in CSV_COLUMNS and v},
        }
        _sort(_contact(line, fields, seen), good, bad)
    return good, bad
