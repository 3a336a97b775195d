#include "gpt/training/optimizer_step.h"

#include <cmath>

#include "gpt/util/error.h"

namespace gpt {

namespace {
// The tensors AdamW updates: all, or (with Muon) all but Muon's matrices.
std::vector<TensorInfo> adamw_tensors(const std::vector<TensorInfo>& tensors, bool muon) {
  std::vector<TensorInfo> out;
  for (const TensorInfo& t : tensors)
    if (!muon || !is_muon_tensor(t)) out.push_back(t);
  return out;
}
}  // namespace

OptimizerStep::OptimizerStep(const std::vector<TensorInfo>& tensors, size_t total, Communicator& comm,
                             OptimizerStepOptions options)
    : comm_(comm),
      n_(total),
      zero_(options.zero && comm.distributed()),
      overlap_(options.overlap && comm.distributed() && !zero_),
      grad_clip_(options.grad_clip),
      adamw_(adamw_tensors(tensors, options.muon.has_value()), total, options.adamw,
             zero_ ? comm.slice_begin(total, comm.rank()) : 0, zero_ ? comm.slice_end(total, comm.rank()) : total),
      peak_lr_(options.peak_lr) {
  if (options.muon) {
    // Muon orthogonalises whole matrices: each rank needs all of them, which ZeRO's slices are not.
    GPT_CHECK(!zero_, "Muon does not run with ZeRO-1 (--zero 1): use one or the other");
    GPT_CHECK(peak_lr_ > 0, "Muon needs the schedule's peak learning rate");
    std::vector<TensorInfo> matrices;
    for (const TensorInfo& t : tensors)
      if (is_muon_tensor(t)) matrices.push_back(t);
    GPT_CHECK(!matrices.empty(), "Muon found no block weight matrices to train (a LoRA adapter has none)");
    muon_ = std::make_unique<Muon>(std::move(matrices), *options.muon);
  }
}

OptimizerStep::OptimizerStep(const ParameterLayout& layout, Communicator& comm, OptimizerStepOptions options)
    : OptimizerStep(layout.tensors(), layout.total(), comm, options) {}

namespace {
OptimizerStepOptions without_overlap(OptimizerStepOptions o) {
  o.overlap = false;  // an adapter's gradients are too few to be worth overlapping
  return o;
}
}  // namespace

OptimizerStep::OptimizerStep(const GPT& model, Communicator& comm, OptimizerStepOptions options)
    : OptimizerStep(model.lora() != nullptr ? model.lora()->tensors() : model.layout().tensors(),
                    model.lora() != nullptr ? model.lora()->total() : model.layout().total(), comm,
                    model.lora() != nullptr ? without_overlap(options) : options) {}

GPT::GradientsReady OptimizerStep::gradients_ready(GPT& model) {
  if (!overlap_ || model.lora() != nullptr) return {};
  return [this, &model](size_t begin, size_t end) {
    comm_.bucket_allreduce_start(model.grads.data() + begin, end - begin);
    comm_.bucket_progress();
  };
}

float OptimizerStep::apply(GPT& model, float lr, int64_t step) {
  if (LoraAdapters* lora = model.lora()) {
    if (lora->grads.size() != lora->total()) lora->grads.assign(lora->total(), 0.0f);
    const float norm = apply(lora->params.data(), lora->grads.data(), lr, step);
    lora->apply_token_rows(model);
    return norm;
  }
  return apply(model.params.data(), model.grads.data(), lr, step);
}

float OptimizerStep::apply(float* params, float* grads, float lr, int64_t step) {
  // Average over ranks; ZeRO keeps only this rank's slice of the mean.
  if (zero_) {
    comm_.reduce_scatter_mean(grads, n_);
  } else if (overlap_) {
    comm_.bucket_allreduce_finish_mean();
  } else {
    comm_.allreduce_mean(grads, n_);  // no-op on one rank
  }
  float* mine = grads + adamw_.begin();
  const size_t mine_n = adamw_.end() - adamw_.begin();
  double sumsq = sum_of_squares(mine, mine_n);
  if (zero_) comm_.allreduce_sum(&sumsq, 1);
  const float norm = static_cast<float>(std::sqrt(sumsq));
  if (!std::isfinite(norm)) {
    throw Error("training diverged: the gradient norm is " + std::to_string(norm) + " at step " +
                std::to_string(step) + " (NaN or infinity in the gradients; try a lower --lr)");
  }
  scale_to_norm(mine, mine_n, norm, grad_clip_);
  adamw_.step(params, grads, lr);
  if (muon_) muon_->step(params, grads, adamw_.m().data(), muon_->config().lr * lr / peak_lr_);
  if (zero_) comm_.allgather(params, n_);
  return norm;
}

OptimizerStep::Moments OptimizerStep::full_moments() {
  if (!zero_) return {adamw_.m().data(), adamw_.v().data()};
  if (comm_.is_root()) {
    full_m_.resize(n_);
    full_v_.resize(n_);
  }
  comm_.gather_slices_to_root(adamw_.m().data(), full_m_.data(), n_);
  comm_.gather_slices_to_root(adamw_.v().data(), full_v_.data(), n_);
  if (!comm_.is_root()) return {};
  return {full_m_.data(), full_v_.data()};
}

}  // namespace gpt
