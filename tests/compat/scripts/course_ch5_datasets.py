"""Course chapter 5, "Time to slice and dice": a TSV loaded with load_dataset, then shuffle, select,
rename_column, filter, map (single and batched), sort, unique, train_test_split, set_format
("pandas") and back, and save_to_disk / load_from_disk.

Follows: huggingface/course, chapters/en/chapter5/3.mdx (Apache-2.0), its calls in order; written
here, not copied. Changed: the UCI drug-review files -> a small local TSV with the same columns.
"""
# --- imports: the only lines that differ from the original ---
import html
from openformers.data import Dataset, load_dataset, load_from_disk
# --- end of imports ---

data_files = {"train": "data/drugs.tsv", "test": "data/drugs.tsv"}
drug_dataset = load_dataset("csv", data_files=data_files, delimiter="\t")
drug_sample = drug_dataset["train"].shuffle(seed=42).select(range(10))
first_three = drug_sample[:3]

for split in drug_dataset.keys():
    assert len(drug_dataset[split]) == len(drug_dataset[split].unique("Unnamed: 0"))

drug_dataset = drug_dataset.rename_column(original_column_name="Unnamed: 0", new_column_name="patient_id")
n_drugs = len(drug_dataset["train"].unique("drugName"))


def lowercase_condition(example):
    return {"condition": example["condition"].lower()}


drug_dataset = drug_dataset.filter(lambda x: x["condition"] is not None)
drug_dataset = drug_dataset.map(lowercase_condition)


def compute_review_length(example):
    return {"review_length": len(example["review"].split())}


drug_dataset = drug_dataset.map(compute_review_length)
shortest = drug_dataset["train"].sort("review_length")[:3]
drug_dataset = drug_dataset.filter(lambda x: x["review_length"] > 3)
drug_dataset = drug_dataset.map(lambda x: {"review": [html.unescape(o) for o in x["review"]]}, batched=True)

drug_dataset.set_format("pandas")
train_df = drug_dataset["train"][:]
frequencies = (train_df["condition"].value_counts().to_frame().reset_index()
               .rename(columns={"index": "condition", "count": "frequency"}))
freq_dataset = Dataset.from_pandas(frequencies)
drug_dataset.reset_format()

drug_dataset_clean = drug_dataset["train"].train_test_split(train_size=0.8, seed=42)
drug_dataset_clean["validation"] = drug_dataset_clean.pop("test")
drug_dataset_clean["test"] = drug_dataset["test"]
drug_dataset_clean.save_to_disk("drug-reviews")
drug_dataset_reloaded = load_from_disk("drug-reviews")

RESULT = {
    "first_three": first_three, "n_drugs": n_drugs, "shortest": shortest,
    "columns": drug_dataset["train"].column_names, "rows": drug_dataset.num_rows,
    "frequencies": freq_dataset.to_list(),
    "splits": {k: v.num_rows for k, v in drug_dataset_reloaded.items()},
    "validation_ids": drug_dataset_reloaded["validation"]["patient_id"],
    "first_review": drug_dataset_reloaded["train"][0]["review"],
}
