"""Generate held-out retrieval prompts for the kvpress parity check, one JSON object per line
({id, task, context, question, answers}), completion-style (the question ends in an answer prefix,
which small instruct models such as SmolLM2-135M need). Deterministic for a seed.

Tasks: `passkey` (the classic pass-key retrieval prompt: one number hidden in repeated filler) and
`needle_city` (one "NAME lives in CITY." needle among distractor needles in varied filler).

Usage: python3 make_prompts.py OUT.jsonl [--per-task 20] [--seed 7] [--min-words 600 --max-words 1400]
"""
import argparse, json, random

FILLER = ("The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ")
SENTENCES = [
    "The committee met on Tuesday to review the budget.", "Rain is expected later in the week.",
    "A new bridge was opened across the river last spring.", "The library extended its opening hours.",
    "Several students presented their projects at the fair.", "The bakery on the corner sells fresh bread.",
    "Traffic was light on the highway this morning.", "The museum added a gallery of modern sculpture.",
    "Farmers reported a good harvest of apples this year.", "The orchestra rehearsed the symphony twice.",
    "A small boat drifted slowly along the canal.", "The town council approved a new park.",
]
NAMES = ["Anna", "Boris", "Clara", "Diego", "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kira", "Liam"]
CITIES = ["Lisbon", "Oslo", "Nairobi", "Lima", "Hanoi", "Dublin", "Quito", "Tallinn", "Perth", "Tunis",
          "Krakow", "Osaka", "Bergen", "Porto", "Seville", "Zagreb"]


def insert_at(units, needle, depth):
    at = round(depth * len(units))
    return units[:at] + [needle] + units[at:]


def passkey(rng, i, words):
    key = str(rng.randint(10000, 99999))
    units = [FILLER] * max(1, words // 20)
    needle = f"The pass key is {key}. Remember it. {key} is the pass key. "
    body = "".join(insert_at(units, needle, rng.random()))
    context = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
               "I will quiz you about the important information there.\n" + body)
    return {"id": f"passkey-{i}", "task": "passkey", "context": context,
            "question": "\nWhat is the pass key? The pass key is", "answers": [key]}


def needle_city(rng, i, words):
    people = rng.sample(NAMES, 4)
    cities = rng.sample(CITIES, 4)
    units = [rng.choice(SENTENCES) + " " for _ in range(max(1, words // 9))]
    for p, c in zip(people, cities):
        units = insert_at(units, f"{p} lives in {c}. ", rng.random())
    k = rng.randrange(4)
    return {"id": f"city-{i}", "task": "needle_city", "context": "".join(units),
            "question": f"\nQuestion: Where does {people[k]} live?\nAnswer: {people[k]} lives in",
            "answers": [cities[k]]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--per-task", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--min-words", type=int, default=600)
    ap.add_argument("--max-words", type=int, default=1400)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    with open(a.out, "w") as f:
        for make in (passkey, needle_city):
            for i in range(a.per_task):
                words = rng.randint(a.min_words, a.max_words)
                f.write(json.dumps(make(rng, i, words)) + "\n")


if __name__ == "__main__":
    main()
