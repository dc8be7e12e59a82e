"""Exports of a recording to other tools' formats (Perfetto)."""
