# Installs the build tree into a scratch prefix, builds an outside project against it, and runs
# the seed example from there. Arguments: BUILD_DIR, SOURCE_DIR, WORK_DIR.
file(REMOVE_RECURSE "${WORK_DIR}")
set(prefix "${WORK_DIR}/prefix")
execute_process(COMMAND ${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${prefix}"
  RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed (${rc})")
endif()
foreach(f include/prism/prism.h bin/prism)
  if(NOT EXISTS "${prefix}/${f}")
    message(FATAL_ERROR "the install has no ${f}")
  endif()
endforeach()
execute_process(COMMAND ${CMAKE_COMMAND} -S "${SOURCE_DIR}/tests/install/consumer"
  -B "${WORK_DIR}/build" -G Ninja "-DCMAKE_PREFIX_PATH=${prefix}"
  "-DPRISM_EXAMPLE_SOURCE=${SOURCE_DIR}/examples/square.cc"
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring the outside project failed (${rc})")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build "${WORK_DIR}/build" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building the outside project failed (${rc})")
endif()
execute_process(COMMAND "${WORK_DIR}/build/consumer_square" OUTPUT_VARIABLE out RESULT_VARIABLE rc
  TIMEOUT 60)
string(STRIP "${out}" out)
if(NOT rc EQUAL 0 OR NOT out STREQUAL "[0, 1, 4, 9, 16, 25, 36, 49]")
  message(FATAL_ERROR "the installed seed example printed '${out}' (exit ${rc})")
endif()
message(STATUS "installed prism works from an outside project: ${out}")
file(REMOVE_RECURSE "${WORK_DIR}")
