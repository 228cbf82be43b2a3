"""What a text teacher reads: a history rendered as item titles (`render_history`), and the
same token ids built fast from each title tokenized once (`TextEncoder`)."""

from __future__ import annotations

from edgerec.core.errors import EdgerecError

TEXT_ORDERS = ("recent-first", "recent-last")
TEXT_RENDER = {"order": "recent-first", "limit": 20}


def item_text(entry: dict, genres: bool = False) -> str:
    """What a text teacher reads for one item: its title, optionally followed by its genres."""
    title = entry.get("title") or f"item {entry['id']}"
    if genres and entry.get("genres"):
        return f"{title} ({', '.join(entry['genres'])})"
    return title


def _window(history, render: dict) -> list[int]:
    items = [int(i) for i in list(history)[-int(render["limit"]) :]]
    return items[::-1] if render["order"] == "recent-first" else items


def render_history(history, titles: list[str], render: dict | None = None) -> str:
    """The text a text teacher reads: the last `limit` item texts, most recent first (default)
    or last, separated by [SEP]."""
    return " [SEP] ".join(titles[i] for i in _window(history, render or TEXT_RENDER))


class TextEncoder:
    """Token ids of rendered histories, built from each item's text tokenized once.

    The same titles recur in every history: tokenizing the rendered string per call ran at
    6,455 histories/s, this concatenation at 56,156/s (benchmarks/text_teacher.py, one thread),
    a cost every training batch, validation pass and teacher target pays. WordPiece splits on whitespace and
    special tokens, so the concatenation `[CLS] t1 [SEP] t2 ... [SEP]` is what the tokenizer
    returns for `render_history` (tests/test_text_teacher.py checks it), truncated on the oldest
    side: from the right when the most recent item comes first, from the left otherwise.
    Hand-written because tokenizers has no cache of pre-tokenized segments to concatenate.
    """

    def __init__(self, tokenizer, titles: list[str], max_tokens: int, render: dict | None = None):
        self.render = {**TEXT_RENDER, **(render or {})}
        if self.render["order"] not in TEXT_ORDERS:
            raise EdgerecError(f"unknown history order {self.render['order']!r} ({' or '.join(TEXT_ORDERS)})")
        self.max_tokens = int(max_tokens)
        pieces = tokenizer(list(titles[1:]), add_special_tokens=False)["input_ids"] if len(titles) > 1 else []
        self.pieces = [[]] + [list(p) for p in pieces]
        self.cls, self.sep, self.pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id

    def ids(self, history) -> list[int]:
        room, body = self.max_tokens - 2, []
        for k, item in enumerate(_window(history, self.render)):
            if k:
                body.append(self.sep)
            body.extend(self.pieces[item])
            if self.render["order"] == "recent-first" and len(body) >= room:
                break
        body = body[:room] if self.render["order"] == "recent-first" else body[max(0, len(body) - room) :]
        return [self.cls] + body + [self.sep]

    def __call__(self, histories) -> dict:
        """Model inputs for a batch, padded to its longest row (as the tokenizer pads)."""
        import torch

        rows = [self.ids(h) for h in histories]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, : len(row)] = torch.tensor(row)
            mask[r, : len(row)] = 1
        return {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": mask}
