#include "checkpoint/hdf5_handles.h"

#include <cstring>
#include <mutex>
#include <string_view>
#include <vector>

namespace memento::checkpoint::h5 {
namespace {

herr_t collect_error(unsigned /*n*/, const H5E_error2_t* error, void* data) {
  auto* messages = static_cast<std::vector<std::string>*>(data);
  if (error->desc != nullptr && error->desc[0] != '\0') {
    messages->emplace_back(error->desc);
  } else {
    char minor[128] = "";
    H5Eget_msg(error->min_num, nullptr, minor, sizeof(minor));
    messages->emplace_back(minor);
  }
  return 0;
}

}  // namespace

std::unique_lock<std::recursive_mutex> lock() {
  static std::recursive_mutex mutex;
  return std::unique_lock<std::recursive_mutex>(mutex);
}

void init_library() {
  static std::once_flag once;
  std::call_once(once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
}

std::string failure_text(const char* expr) {
  std::string_view function(expr);
  function = function.substr(0, function.find('('));
  // The stack runs from the API call down to the innermost cause; the last two entries say the
  // most (e.g. "truncated file: eof = 1024, ..." under "unable to read superblock").
  std::vector<std::string> messages;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect_error, &messages);
  H5Eclear2(H5E_DEFAULT);
  std::string text = std::string(function) + " failed";
  const size_t first = messages.size() > 2 ? messages.size() - 2 : 0;
  for (size_t i = first; i < messages.size(); ++i) text += (i == first ? ": " : "; ") + messages[i];
  return text;
}

void throw_failure(const char* expr, const std::string& where) {
  throw CheckpointError(where + ": " + failure_text(expr));
}

bool has_attr(hid_t object, const char* name, const std::string& where) {
  return HDF5_CHECK(H5Aexists(object, name), where, ": attribute ", name) > 0;
}

namespace {

void write_attr(hid_t object, const char* name, hid_t type, const void* value,
                const std::string& where) {
  H5Space space(HDF5_CHECK(H5Screate(H5S_SCALAR), where));
  H5Attr attr(HDF5_CHECK(H5Acreate2(object, name, type, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                         where, ": attribute ", name));
  HDF5_CHECK(H5Awrite(attr.get(), type, value), where, ": attribute ", name);
}

H5Attr open_attr(hid_t object, const char* name, H5T_class_t expected, const std::string& where) {
  MEMENTO_EXPECT(has_attr(object, name, where), CheckpointError, where, ": attribute ", name,
                 " is missing");
  H5Attr attr(HDF5_CHECK(H5Aopen(object, name, H5P_DEFAULT), where, ": attribute ", name));
  H5Type type(HDF5_CHECK(H5Aget_type(attr.get()), where, ": attribute ", name));
  H5Space space(HDF5_CHECK(H5Aget_space(attr.get()), where, ": attribute ", name));
  MEMENTO_EXPECT(
      H5Tget_class(type.get()) == expected && H5Sget_simple_extent_type(space.get()) == H5S_SCALAR,
      CheckpointError, where, ": attribute ", name, " is not a scalar of the expected type");
  return attr;
}

}  // namespace

void write_attr_i64(hid_t object, const char* name, int64_t value, const std::string& where) {
  write_attr(object, name, H5T_STD_I64LE, &value, where);
}

void write_attr_u32(hid_t object, const char* name, uint32_t value, const std::string& where) {
  write_attr(object, name, H5T_STD_U32LE, &value, where);
}

void write_attr_string(hid_t object, const char* name, const std::string& value,
                       const std::string& where) {
  const H5Type type = make_string_type(where);
  const char* data = value.c_str();
  write_attr(object, name, type.get(), &data, where);
}

void write_attr_i64_array(hid_t object, const char* name, const std::vector<int64_t>& values,
                          const std::string& where) {
  const hsize_t size = values.size();
  H5Space space(HDF5_CHECK(H5Screate_simple(1, &size, nullptr), where));
  H5Attr attr(
      HDF5_CHECK(H5Acreate2(object, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                 where, ": attribute ", name));
  const int64_t none = 0;  // HDF5 wants a buffer even for no elements
  HDF5_CHECK(H5Awrite(attr.get(), H5T_NATIVE_INT64, values.empty() ? &none : values.data()), where,
             ": attribute ", name);
}

int64_t read_attr_i64(hid_t object, const char* name, const std::string& where) {
  const H5Attr attr = open_attr(object, name, H5T_INTEGER, where);
  int64_t value = 0;
  HDF5_CHECK(H5Aread(attr.get(), H5T_NATIVE_INT64, &value), where, ": attribute ", name);
  return value;
}

uint32_t read_attr_u32(hid_t object, const char* name, const std::string& where) {
  const H5Attr attr = open_attr(object, name, H5T_INTEGER, where);
  uint32_t value = 0;
  HDF5_CHECK(H5Aread(attr.get(), H5T_NATIVE_UINT32, &value), where, ": attribute ", name);
  return value;
}

std::string read_attr_string(hid_t object, const char* name, const std::string& where) {
  const H5Attr attr = open_attr(object, name, H5T_STRING, where);
  H5Type file_type(HDF5_CHECK(H5Aget_type(attr.get()), where, ": attribute ", name));
  if (H5Tis_variable_str(file_type.get()) > 0) {
    // HDF5 converts no string between ASCII and UTF-8: read with the file's character set.
    const H5Type type = make_string_type(where);
    HDF5_CHECK(H5Tset_cset(type.get(), H5Tget_cset(file_type.get())), where);
    char* data = nullptr;
    HDF5_CHECK(H5Aread(attr.get(), type.get(), &data), where, ": attribute ", name);
    std::string value = data != nullptr ? data : "";
    H5free_memory(data);
    return value;
  }
  // A fixed-length string, as other tools may write.
  const size_t size = H5Tget_size(file_type.get());
  std::string value(size, '\0');
  HDF5_CHECK(H5Aread(attr.get(), file_type.get(), value.data()), where, ": attribute ", name);
  value.resize(std::strlen(value.c_str()));
  return value;
}

std::vector<int64_t> read_attr_i64_array(hid_t object, const char* name, const std::string& where) {
  MEMENTO_EXPECT(has_attr(object, name, where), CheckpointError, where, ": attribute ", name,
                 " is missing");
  H5Attr attr(HDF5_CHECK(H5Aopen(object, name, H5P_DEFAULT), where, ": attribute ", name));
  H5Type type(HDF5_CHECK(H5Aget_type(attr.get()), where, ": attribute ", name));
  H5Space space(HDF5_CHECK(H5Aget_space(attr.get()), where, ": attribute ", name));
  MEMENTO_EXPECT(H5Tget_class(type.get()) == H5T_INTEGER &&
                     H5Sget_simple_extent_type(space.get()) == H5S_SIMPLE &&
                     H5Sget_simple_extent_ndims(space.get()) == 1,
                 CheckpointError, where, ": attribute ", name, " is not a 1-D integer array");
  const hssize_t size = HDF5_CHECK(H5Sget_simple_extent_npoints(space.get()), where);
  std::vector<int64_t> values(static_cast<size_t>(size));
  if (size > 0) {
    HDF5_CHECK(H5Aread(attr.get(), H5T_NATIVE_INT64, values.data()), where, ": attribute ", name);
  }
  return values;
}

H5Type make_string_type(const std::string& where) {
  H5Type type(HDF5_CHECK(H5Tcopy(H5T_C_S1), where));
  HDF5_CHECK(H5Tset_size(type.get(), H5T_VARIABLE), where);
  HDF5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8), where);
  return type;
}

}  // namespace memento::checkpoint::h5
