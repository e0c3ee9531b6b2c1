// Typed errors at the boundaries (config, files, checkpoints, user input) and the fatal CHECK
// family for broken invariants. Messages name what was wrong and where.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace memento {

// Base of every recoverable Memento error; main() reports what() in one line and exits non-zero.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class ConfigError : public Error {  // a YAML key path and what was expected
 public:
  using Error::Error;
};
class DataError : public Error {  // a dataset file, an offset and what was expected
 public:
  using Error::Error;
};
class CheckpointError : public Error {  // a checkpoint directory, a tensor and the mismatch
 public:
  using Error::Error;
};
class ShapeError : public Error {  // an op or tensor and its expected shape
 public:
  using Error::Error;
};
class OutOfMemoryError : public Error {  // a memory resource, its budget and the failed request
 public:
  using Error::Error;
};

namespace detail {
[[noreturn]] void fatal(const char* file, int line, const std::string& message);

template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace memento

// Throws ErrorType with the streamed message when cond is false. For input validation.
#define MEMENTO_EXPECT(cond, ErrorType, ...)                              \
  do {                                                                    \
    if (!(cond)) throw ErrorType(::memento::detail::concat(__VA_ARGS__)); \
  } while (0)

// Broken invariant: prints rank, host, file and line, then aborts the job. Evaluates cond once.
#define MEMENTO_CHECK(cond, ...)                                                 \
  do {                                                                           \
    if (!(cond))                                                                 \
      ::memento::detail::fatal(                                                  \
          __FILE__, __LINE__,                                                    \
          ::memento::detail::concat("check failed: " #cond " ", ##__VA_ARGS__)); \
  } while (0)
