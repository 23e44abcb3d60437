"""Built-in trained-block architectures, one module per model; importing registers them (see
``agents.base``): ``detnet``, ``oampnet``, ``dnn`` (detection), ``cnn`` (precoding), ``rnn``,
``lstm``, ``gru``, ``transformer`` (prediction), ``sensenet`` (los, beam, pathloss, position)."""
from . import cnn, detnet, dnn, llm, oampnet, predictors, sensenet  # noqa: F401
