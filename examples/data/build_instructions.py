"""Build examples/data/instructions.jsonl: a small, deterministic instruction set.

Every response follows one template, ``RESULT: <answer> [END]``, so a tuned model's outputs
can be checked for the trained format. Run ``python examples/data/build_instructions.py`` to
regenerate the file (the output is byte-identical on every run).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo", "Canada": "Ottawa",
    "Egypt": "Cairo", "Peru": "Lima", "Kenya": "Nairobi", "Norway": "Oslo", "Greece": "Athens", "Chile": "Santiago",
}
OPPOSITES = {
    "hot": "cold", "big": "small", "fast": "slow", "up": "down", "light": "dark", "open": "closed", "early": "late",
    "happy": "sad", "full": "empty", "strong": "weak", "new": "old", "high": "low",
}
WORDS = ["apple", "river", "garden", "pencil", "window", "rocket", "forest", "candle", "silver", "planet", "bridge",
         "music", "orange", "tiger", "cloud", "summer", "button", "castle", "mirror", "ladder"]


def _rows(rng: random.Random) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []

    def add(instruction: str, answer: str) -> None:
        rows.append({"instruction": instruction, "response": f"RESULT: {answer} [END]"})

    for _ in range(30):
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        add(f"What is {a} plus {b}?", str(a + b))
    for _ in range(20):
        a, b = rng.randint(30, 99), rng.randint(1, 29)
        add(f"Subtract {b} from {a}.", str(a - b))
    for country, capital in CAPITALS.items():
        add(f"What is the capital of {country}?", capital)
    for word, opposite in OPPOSITES.items():
        add(f"Give the opposite of the word '{word}'.", opposite)
    for word in WORDS:
        add(f"Write the word '{word}' in capital letters.", word.upper())
    for word in WORDS:
        add(f"How many letters are in the word '{word}'?", str(len(word)))
    for word in rng.sample(WORDS, 15):
        add(f"Spell the word '{word}' backwards.", word[::-1])
    for word in rng.sample(WORDS, 15):
        add(f"What is the first letter of '{word}'?", word[0])
    rng.shuffle(rows)
    return rows


def build(path: Path | None = None, seed: int = 0) -> Path:
    path = path or Path(__file__).with_name("instructions.jsonl")
    rows = _rows(random.Random(seed))
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


if __name__ == "__main__":
    out = build()
    print(f"wrote {sum(1 for _ in out.open())} rows to {out}")
