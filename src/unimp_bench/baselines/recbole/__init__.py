"""RecBole models trained on OUR split and scored by OUR metrics.

The dataset is exported to RecBole's pre-split atomic files (`recbole_export`), RecBole builds its
dataset, train dataloader (negative sampling, BERT4Rec masking, ...) and model from those files, and
this package runs the training loop itself: Adam (or the configured learner) over
`model.calculate_loss`, one validation pass per epoch over every training user's valid interaction
scored with our NDCG@10, early stopping after `stopping_step` epochs without improvement, and the best
epoch's weights kept in memory. S3Rec runs its self-supervised pre-training stage first
(`pretrain_epochs`) and is fine-tuned from those weights.

Scoring uses the model's `full_sort_predict` over the whole catalog for each example's user and
history (every interaction before the target, the last `max_history` of them), mapped back to our
item ids, and turned into exact (greater, ties) counts, so RecBole's metric code is never involved.

SASRec can also train the way the published model did (`train_rows: sequences`, `position_origin:
latest`, `loss_type: BCE`; see recbole_objectives): one row per user whose every position predicts the
next item, batched here from our own train split, with the same validation and early stopping.
BERT4Rec likewise (`train_rows: sequences`): one cloze-masked row per user.

A model that learned one vector per user (BPR, LightGCN, HGN: it has a `user_embedding`) cannot score
a user it never saw; on the new_user and new_domain splits it is reported as not applicable.

RecBole's own options go under `recbole:` in the baseline YAML; a key RecBole does not define, or one
unimp-bench sets itself (data paths, split, epochs, seed, ...), is an error.

Modules: params.py (the YAML's parameters and the RecBole config they give), batching.py (the
optimizer steps of one epoch), fitting.py (training with early stopping), scoring.py (full-catalog
scores mapped back to our item ids), predictor.py (the predictor, built and then fitted explicitly).
"""
