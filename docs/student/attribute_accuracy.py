"""Attribute accuracy of the student's sweep sets, filled into their report.json files.

`evaluate.py --sweep` scored each sweep point without the captions' attributes (fixed in the same change), so the
sweep reports of docs/student/evaluation/ were written with "generated": null for attribute accuracy. This scores
the generated images with the same function and critic evaluate.py uses (fashiongen.evaluation.critic_scores
.attribute_accuracy over the shipped critic), against the attributes of the captions each image was made for.

    python docs/student/attribute_accuracy.py [docs/student/evaluation] [../shared/data/fashion-products]
"""

import json
import sys
from pathlib import Path

from fashiongen.evaluation.critic import load_critic
from fashiongen.evaluation.critic_scores import attribute_accuracy
from fashiongen.evaluation.images import read_image_folder
from fashiongen.submission import read_caption_list

root = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/student/evaluation")
source = sys.argv[2] if len(sys.argv) > 2 else "../shared/data/fashion-products"
critic = load_critic("fashiongen/pretrained/critic")
attributes = {item.id: item.attributes for item in read_caption_list(source, caption_mode="both")}
for report_path in sorted(root.glob("sweep/*/report.json")):
    images = read_image_folder(report_path.parent / "generated", None, attributes)
    report = json.loads(report_path.read_text())
    for name, (accuracy, count) in attribute_accuracy(critic, images.images, images.attributes).items():
        report["metrics"]["attribute_accuracy"][name]["generated"] = {"accuracy": accuracy, "count": count}
    report["meta"]["attribute_accuracy_filled_by"] = "docs/student/attribute_accuracy.py"
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    print(report_path.parent.name, {k: round(v["generated"]["accuracy"], 3) for k, v in report["metrics"]["attribute_accuracy"].items()})
