"""Build the small English sentiment set shipped in examples/data/sentiment/.

Sentences combine a subject, an optional intensifier and an opinion phrase. The test split
uses subjects and opinion phrases that the training split never shows, so accuracy on it
measures what the encoder brings, not memorised phrases. Deterministic: run it again and
the files come out identical.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

TRAIN_SUBJECTS = ["the movie", "this phone", "the hotel room", "our waiter", "the new album", "this laptop", "the pizza",
                  "the customer service", "the delivery", "this book", "the concert", "the app update", "the coffee",
                  "the rental car", "this jacket", "the museum tour"]
TEST_SUBJECTS = ["the restaurant", "this headset", "the flight", "the sequel", "the support team", "the camera",
                 "this game", "the train ride"]
POSITIVE_TRAIN = ["was wonderful", "exceeded my expectations", "made my day", "is worth every penny", "was a real delight",
                  "works perfectly", "was absolutely fantastic", "left me very happy", "is excellent", "felt great"]
NEGATIVE_TRAIN = ["was terrible", "fell far short of my expectations", "ruined my day", "is a waste of money",
                  "was a real letdown", "stopped working after a day", "was absolutely awful", "left me very upset",
                  "is dreadful", "felt horrible"]
POSITIVE_TEST = ["was superb", "is a pleasure to use", "was lovely", "impressed everyone", "is brilliant"]
NEGATIVE_TEST = ["was awful", "is a pain to use", "was disappointing", "annoyed everyone", "is broken"]
OPENERS = ["", "Honestly, ", "Overall, ", "To be fair, ", "I think ", "In short, "]
CLOSERS = [".", "!", ". I would tell my friends.", ". That's my take.", "."]


def _rows(subjects: list[str], positive: list[str], negative: list[str], n: int, rng: random.Random) -> list[dict]:
    rows = []
    for i in range(n):
        label = i % 2
        phrase = rng.choice(positive if label else negative)
        text = f"{rng.choice(OPENERS)}{rng.choice(subjects)} {phrase}{rng.choice(CLOSERS)}"
        rows.append({"text": text[0].upper() + text[1:], "label": label})
    rng.shuffle(rows)
    return rows


def main() -> None:
    rng = random.Random(1234)
    out = Path(__file__).parent / "sentiment"
    out.mkdir(exist_ok=True)
    for name, rows in (("train", _rows(TRAIN_SUBJECTS, POSITIVE_TRAIN, NEGATIVE_TRAIN, 480, rng)),
                       ("test", _rows(TEST_SUBJECTS, POSITIVE_TEST, NEGATIVE_TEST, 160, rng))):
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
