# Warnings, sanitizers and other flags shared by every prism target.
add_library(prism_flags INTERFACE)
add_library(prism::flags ALIAS prism_flags)
target_compile_options(prism_flags INTERFACE -Wall -Wextra -Wpedantic -Wno-unused-parameter -Wno-missing-field-initializers)
if(PRISM_WERROR)
  target_compile_options(prism_flags INTERFACE -Werror)
endif()

if(PRISM_SANITIZE STREQUAL "address")
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
elseif(PRISM_SANITIZE STREQUAL "thread")
  # -Wno-tsan: Asio's atomic_thread_fence draws a GCC warning that TSan cannot model fences.
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer -Wno-tsan)
  add_link_options(-fsanitize=thread)
elseif(NOT PRISM_SANITIZE STREQUAL "")
  message(FATAL_ERROR "PRISM_SANITIZE must be 'address', 'thread' or empty, not '${PRISM_SANITIZE}'")
endif()
