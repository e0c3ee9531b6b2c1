// Text generation from a trained model: `trainer sample`.
#pragma once

#include <string>

#include "core/data/tokenizer.h"
#include "core/model/llama.h"
#include "launch/cli.h"

namespace memento {

// Continues `args.prompt` by up to args.tokens tokens, sampling from softmax(logits / temperature)
// restricted to the top_k most likely tokens (temperature 0: greedy) among the tokenizer's ids.
// The prompt is preceded by the token that starts documents in prepared data (BOS, else EOS:
// document_start_id); generation stops at EOS. Random draws come from the counter-based RNG
// keyed by args.seed, so output is reproducible. Throws DataError when the tokenizer has more
// ids than the model.
std::string generate(LlamaModel& model, const Tokenizer& tokenizer, const SampleArgs& args);

// Loads the model and tokenizer of a checkpoint (a step directory, or a checkpoint root whose
// latest complete checkpoint is used; the tokenizer is meta/tokenizer as stored by
// serialize_tokenizer_file, or args.tokenizer) and prints the prompt and its continuation.
int run_sample(const SampleArgs& args);

}  // namespace memento
