#include "checkpoint/hdf5_format.h"

#include <filesystem>
#include <system_error>

#include "checkpoint/crc32c.h"
#include "checkpoint/format_version.h"

namespace memento::checkpoint::h5 {

// The narrow floats have no HDF5 type that other tools read, so they are stored as unsigned
// integers of their width, bit for bit; the "dtype" attribute says what they are.
hid_t storage_type(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return H5T_IEEE_F32LE;
    case DType::kF64:
      return H5T_IEEE_F64LE;
    case DType::kI32:
      return H5T_STD_I32LE;
    case DType::kI64:
      return H5T_STD_I64LE;
    case DType::kU16:
    case DType::kBF16:
    case DType::kF16:
      return H5T_STD_U16LE;
    case DType::kF8E4M3:
    case DType::kF8E5M2:
      return H5T_STD_U8LE;
  }
  MEMENTO_CHECK(false, "unknown dtype ", static_cast<int>(dtype));
  return H5I_INVALID_HID;
}

std::string describe_type(hid_t type) {
  const size_t bits = H5Tget_size(type) * 8;
  switch (H5Tget_class(type)) {
    case H5T_FLOAT:
      return "float" + std::to_string(bits);
    case H5T_INTEGER:
      return (H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int") + std::to_string(bits);
    case H5T_STRING:
      return "string";
    default:
      return "an HDF5 type of class " + std::to_string(static_cast<int>(H5Tget_class(type)));
  }
}

std::string dims_str(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

std::vector<int64_t> dims_of(const Shape& shape) {
  std::vector<int64_t> dims(shape.ndim());
  for (int i = 0; i < shape.ndim(); ++i) dims[i] = shape[i];
  return dims;
}

std::vector<int64_t> dataset_dims(hid_t dataset, const std::string& where) {
  const H5Space space(HDF5_CHECK(H5Dget_space(dataset), where));
  const int ndim = HDF5_CHECK(H5Sget_simple_extent_ndims(space.get()), where);
  std::vector<hsize_t> dims(ndim);
  HDF5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr), where);
  return {dims.begin(), dims.end()};
}

std::string entry_where(const std::string& path, const StateEntry& entry) {
  return path + ": " + std::string(entry_kind_name(entry.kind)) + " " + entry.name;
}

uint32_t checksum(const StateEntry& entry) {
  switch (entry.kind) {
    case EntryKind::kTensor:
      return crc32c(entry.tensor.raw(), entry.tensor.bytes());
    case EntryKind::kInt:
      return crc32c(entry.int_value, sizeof(int64_t));
    case EntryKind::kDouble:
      return crc32c(entry.double_value, sizeof(double));
    case EntryKind::kString:
      return crc32c(entry.string_value->data(), entry.string_value->size());
  }
  return 0;
}

void expect_host_tensor(const StateEntry& entry, const std::string& path) {
  MEMENTO_EXPECT(entry.tensor.device().is_cpu(), CheckpointError, path, ": tensor ", entry.name,
                 " is on ", device_name(entry.tensor.device()),
                 "; HDF5 checkpoints read and write host memory only");
}

H5File open_hdf5_file(const std::string& path) {
  init_library();
  std::error_code error;
  MEMENTO_EXPECT(std::filesystem::is_regular_file(path, error), CheckpointError, path,
                 ": no such checkpoint file");
  H5File file(HDF5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), path,
                         ": cannot open as HDF5 (truncated or not a checkpoint?)"));
  MEMENTO_EXPECT(has_attr(file.get(), "format_version", path), CheckpointError, path,
                 ": not a Memento checkpoint (no format_version attribute)");
  return file;
}

H5File open_rank_file(const std::string& path) {
  H5File file = open_hdf5_file(path);
  const int64_t version = read_attr_i64(file.get(), "format_version", path + ": root");
  MEMENTO_EXPECT(version == kFormatVersion, CheckpointError, path, ": format version ", version,
                 ", this build reads version ", kFormatVersion);
  return file;
}

}  // namespace memento::checkpoint::h5
