// A fixed-size array of zeros that costs memory only where it is written.
// calloc hands large blocks straight from the kernel's zero pages without
// touching them, where std::vector writes every element: a KV cache reserved for
// a model's whole context, or scratch sized for its longest prompt, is resident
// only as far as a session actually uses it.
#pragma once
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>
#include <type_traits>

namespace gpt {

template <class T>
class ZeroedBuffer {
  static_assert(std::is_trivial_v<T>, "zero bytes must be a valid T");

 public:
  ZeroedBuffer() = default;
  explicit ZeroedBuffer(size_t n) : data_(n > 0 ? static_cast<T*>(std::calloc(n, sizeof(T))) : nullptr), size_(n) {
    if (n > 0 && data_ == nullptr) throw std::bad_alloc();
  }
  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

 private:
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T, Free> data_;
  size_t size_ = 0;
};

}  // namespace gpt
