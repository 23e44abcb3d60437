"""Built-in trained-block architectures, one module per model; importing registers them (see
``agents.base``): ``detnet``, ``oampnet``, ``dnn`` (detection), ``cnn`` (precoding), ``rnn``,
``lstm``, ``gru``, ``transformer`` (prediction)."""
from . import cnn, detnet, dnn, llm, oampnet, predictors  # noqa: F401
