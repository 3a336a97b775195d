// What follows the backward pass of a step, on one rank or many: gradients
// averaged over the ranks, clipped by their global norm, AdamW applied, and the
// parameters the same on every rank again. Three ways, by the options:
//   plain   one ring all-reduce of the gradients after backward
//   overlap each block's gradients all-reduced (MPI_Iallreduce) while backward
//           goes on, through gradients_ready()
//   ZeRO-1  reduce-scatter; each rank updates its slice with its share of the
//           AdamW state; all-gather the parameters
// Every way clips against the same norm: sum_of_squares in double (fixed order),
// summed over ranks in double.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>

#include "gpt/distributed/communicator.h"
#include "gpt/model/gpt.h"
#include "gpt/training/adamw.h"
#include "gpt/training/muon.h"

namespace gpt {

struct OptimizerStepOptions {
  AdamWConfig adamw;
  float grad_clip = 1.0f;  // 0: no clipping
  bool zero = false;       // shard AdamW's state (only with more than one rank)
  bool overlap = false;    // all-reduce during backward (not with zero)
  // Muon for the blocks' weight matrices (is_muon_tensor), AdamW for the rest.
  // Its rate follows the schedule given to apply(): muon->lr * lr / peak_lr.
  std::optional<MuonConfig> muon;
  float peak_lr = 0.0f;
};

class OptimizerStep {
 public:
  OptimizerStep(const std::vector<TensorInfo>& tensors, size_t total, Communicator& comm,
                OptimizerStepOptions options);
  OptimizerStep(const ParameterLayout& layout, Communicator& comm, OptimizerStepOptions options);
  // Over the parameters a model trains: its own, or its LoRA adapter's when one is attached.
  OptimizerStep(const GPT& model, Communicator& comm, OptimizerStepOptions options);

  // For GPT::forward_backward on the last micro-batch of a step: starts the
  // all-reduce of each range of gradients as backward finishes it (overlap mode;
  // an empty function otherwise).
  GPT::GradientsReady gradients_ready(GPT& model);
  // Averages, clips and applies the gradients with learning rate lr. Returns the
  // global gradient norm before clipping; a norm that is not finite is an error
  // naming `step` (the parameters are left as they were). With a LoRA adapter
  // attached, the adapter's parameters are the ones updated (and its trainable
  // token rows written back into the model).
  float apply(GPT& model, float lr, int64_t step);
  float apply(float* params, float* grads, float lr, int64_t step);

  AdamW& adamw() { return adamw_; }
  const AdamW& adamw() const { return adamw_; }
  bool zero() const { return zero_; }
  // Full-size AdamW moments on rank 0 for a checkpoint (gathered from every rank
  // under ZeRO; every rank must call it). Other ranks get null pointers.
  struct Moments {
    const float* m = nullptr;
    const float* v = nullptr;
  };
  Moments full_moments();

 private:
  Communicator& comm_;
  const size_t n_;
  const bool zero_, overlap_;
  const float grad_clip_;
  AdamW adamw_;
  std::unique_ptr<Muon> muon_;  // its momentum lives in AdamW's first-moment slots of its matrices
  float peak_lr_ = 0.0f;
  std::vector<float> full_m_, full_v_;  // ZeRO: moments gathered on rank 0
};

}  // namespace gpt
