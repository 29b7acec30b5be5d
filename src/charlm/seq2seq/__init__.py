"""The seq2seq task, apart from the language-model path: pairs data (`data.py`), the encoder-decoder
(`model.py`), its LightningModule (`lightning_module.py`) and decoding, greedy, sampled or beam (`decoding.py`)."""

from charlm.seq2seq.data import PairsDataModule, PairVocab
from charlm.seq2seq.model import Seq2Seq

__all__ = ["PairsDataModule", "PairVocab", "Seq2Seq"]
