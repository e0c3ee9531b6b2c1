// Text generation from a trained model: `trainer sample`.
#pragma once

#include <string>

#include "core/data/bpe_tokenizer.h"
#include "core/model/llama.h"
#include "launch/cli.h"

namespace memento {

// Continues `args.prompt` by up to args.tokens tokens, sampling from softmax(logits / temperature)
// restricted to the top_k most likely tokens (temperature 0: greedy). Stops at end-of-text.
// Random draws come from the counter-based RNG keyed by args.seed, so output is reproducible.
std::string generate(LlamaModel& model, const BpeTokenizer& tokenizer, const SampleArgs& args);

// Loads the model and tokenizer of a checkpoint (a step directory, or a checkpoint root whose
// latest complete checkpoint is used) and prints the prompt and its continuation.
int run_sample(const SampleArgs& args);

}  // namespace memento
