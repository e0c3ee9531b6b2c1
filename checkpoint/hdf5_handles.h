// RAII owners for HDF5 C API handles, the HDF5_CHECK macro and attribute helpers. Private to
// checkpoint/: it includes <hdf5.h>, whose include directories only memento_checkpoint sees.
// The HDF5 library may be built without thread safety: hold h5::lock() around HDF5 calls.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"

namespace memento::checkpoint {

// Move-only owner of one HDF5 identifier; the destructor closes it and never throws.
template <herr_t (*Close)(hid_t)>
class H5Handle {
 public:
  H5Handle() = default;
  explicit H5Handle(hid_t id) : id_(id) {}
  H5Handle(H5Handle&& other) noexcept : id_(std::exchange(other.id_, H5I_INVALID_HID)) {}
  H5Handle& operator=(H5Handle&& other) noexcept {
    if (this != &other) {
      reset();
      id_ = std::exchange(other.id_, H5I_INVALID_HID);
    }
    return *this;
  }
  H5Handle(const H5Handle&) = delete;
  H5Handle& operator=(const H5Handle&) = delete;
  ~H5Handle() { reset(); }

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Closes now and returns HDF5's status (negative on failure): closing a file flushes it, so a
  // writer must check this instead of leaving it to the destructor.
  herr_t close() {
    const herr_t status = id_ >= 0 ? Close(id_) : 0;
    id_ = H5I_INVALID_HID;
    return status;
  }

 private:
  void reset() noexcept {
    if (id_ >= 0) Close(id_);
    id_ = H5I_INVALID_HID;
  }

  hid_t id_ = H5I_INVALID_HID;
};

using H5File = H5Handle<&H5Fclose>;
using H5Group = H5Handle<&H5Gclose>;
using H5Dataset = H5Handle<&H5Dclose>;
using H5Space = H5Handle<&H5Sclose>;
using H5Type = H5Handle<&H5Tclose>;  // only for types made by H5Tcopy, never predefined ones
using H5Attr = H5Handle<&H5Aclose>;
using H5Plist = H5Handle<&H5Pclose>;
using H5Object = H5Handle<&H5Oclose>;

namespace h5 {

// Serializes this process's HDF5 calls (recursive). Take it before the first handle of a scope
// so that it is released after the last handle closes.
[[nodiscard]] std::unique_lock<std::recursive_mutex> lock();

// Turns off HDF5's automatic printing of its error stack, once per process; our errors say what
// went wrong instead. Every entry point calls it before its first HDF5 call.
void init_library();

// "H5Dread failed: <innermost messages of HDF5's error stack>", clearing the stack.
std::string failure_text(const char* expr);

[[noreturn]] void throw_failure(const char* expr, const std::string& where);

template <typename T, typename Where>
T check(T result, const char* expr, Where&& where) {
  if (result < 0) [[unlikely]]
    throw_failure(expr, where());
  return result;
}

// Root and dataset attributes. `where` names the file and object for error messages.
bool has_attr(hid_t object, const char* name, const std::string& where);
void write_attr_i64(hid_t object, const char* name, int64_t value, const std::string& where);
void write_attr_u32(hid_t object, const char* name, uint32_t value, const std::string& where);
void write_attr_string(hid_t object, const char* name, const std::string& value,
                       const std::string& where);
// A 1-D int64 attribute (may be empty).
void write_attr_i64_array(hid_t object, const char* name, const std::vector<int64_t>& values,
                          const std::string& where);
// Readers throw CheckpointError naming `where` and the attribute when it is absent or of
// another type class.
int64_t read_attr_i64(hid_t object, const char* name, const std::string& where);
uint32_t read_attr_u32(hid_t object, const char* name, const std::string& where);
std::string read_attr_string(hid_t object, const char* name, const std::string& where);
std::vector<int64_t> read_attr_i64_array(hid_t object, const char* name, const std::string& where);

// A scalar variable-length UTF-8 string type, as h5py writes str.
H5Type make_string_type(const std::string& where);

}  // namespace h5
}  // namespace memento::checkpoint

// Evaluates an HDF5 C API call once; a negative result (herr_t, hid_t or htri_t) throws
// CheckpointError "<where>: <function> failed: <HDF5's reason>". The trailing arguments are
// streamed into <where> only on failure: name the file and the object, e.g.
//   HDF5_CHECK(H5Dread(...), path, ": tensor ", name);
#define HDF5_CHECK(expr, ...)                     \
  ::memento::checkpoint::h5::check((expr), #expr, \
                                   [&] { return ::memento::detail::concat(__VA_ARGS__); })
