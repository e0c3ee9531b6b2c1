// What a layer and a model stage know of the parallel layout (ARCHITECTURE contract 5): the
// tensor-, context- and pipeline-parallel groups this rank computes with, and its coordinates on
// them. The trainer builds one from its ProcessGroups (parallel/process_groups.h) and passes it to
// the model's constructor, which hands it to every layer through LayerContext. With every axis at
// 1 (the default) each group is this rank alone and the parallel layers are plain layers.
#pragma once

#include <cstdint>

#include "core/parallel/communicator.h"

namespace memento::parallel {

class ParallelContext {
 public:
  // Every axis of size 1.
  ParallelContext();
  // The groups are borrowed: they must outlive the context (ProcessGroups owns them).
  ParallelContext(Communicator& tp, Communicator& cp, Communicator& pp);

  // The context of a single rank, shared (its communicators are one-rank identities).
  static const ParallelContext& single();

  Communicator& tp() const { return *tp_; }  // tensor parallel: a layer's weight shards
  Communicator& cp() const { return *cp_; }  // context parallel: the sequence's chunks
  Communicator& pp() const { return *pp_; }  // pipeline parallel: the model's stages
  int tp_rank() const { return tp_->rank(); }
  int tp_size() const { return tp_->size(); }
  int cp_rank() const { return cp_->rank(); }
  int cp_size() const { return cp_->size(); }
  int pp_rank() const { return pp_->rank(); }
  int pp_size() const { return pp_->size(); }
  bool is_single() const { return tp_size() == 1 && cp_size() == 1 && pp_size() == 1; }

 private:
  Communicator* tp_;
  Communicator* cp_;
  Communicator* pp_;
};

}  // namespace memento::parallel
