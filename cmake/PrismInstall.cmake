# `cmake --install` puts headers, the library, the prism tool and a CMake package in place, so
# that an outside project can find_package(prism CONFIG REQUIRED) and link prism::prism.
include(CMakePackageConfigHelpers)
install(TARGETS prism_core EXPORT prismTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS prism_collective EXPORT prismTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
if(TARGET prism_collective_nccl)  # loaded from next to libprism_collective
  install(TARGETS prism_collective_nccl LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
endif()
install(TARGETS prism_tool RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY core/include/prism gpu/include/prism collectives/include/prism DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT prismTargets NAMESPACE prism:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/prism)
configure_package_config_file(cmake/prismConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/prismConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/prism)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/prismConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/prismConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/prismConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/prism)
