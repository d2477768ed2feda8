"""Tables and figures a reader compares with the paper (stages `aggregate`, `report`; command `table5`).

- `runs`: read the run folders the `classify` stage wrote.
- `tables`: the paper's Table 2/3/4 layout, the published tables, the light-vs-dark gap.
- `tone`: the skin tone (ITA) of the synthetic images against their sources and target types.
- `figures`: real/synthetic pairs (Fig. 2), confusion matrices, accuracy per Fitzpatrick type.
- `table5`: the generation-strategy ablation from `dvc exp show --json`.
- `build`: the whole report folder.
"""

#: display names of the architectures, as in the paper.
ARCH_NAMES = {"vgg16": "VGG-16", "resnet18": "ResNet-18", "vit_b_16": "ViT-B-16"}
