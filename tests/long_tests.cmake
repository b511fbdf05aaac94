# Run by ctest after the GoogleTest cases are listed (TEST_INCLUDE_FILES, tests/CMakeLists.txt):
# the cases that take longest, each with its COST, so that ctest -j starts them first. A cost is
# about the seconds the case took in the build where it is slowest (the sanitizer build, but for
# the memory measurements it skips), measured 2026-12-08 on the 2-core machine; only the order
# matters. Where a case is renamed, update its name here: an unknown name is passed over.
set(nuq_long_cases
  Qgemm.AddressesMatricesBeyondTwoToThe31Weights 60
  MnistEndToEnd.MismatchExperimentFollowsTheTheory 60
  HostileInputs.EveryCaseExitsAsDocumentedAndChangesNoFile 50
  Cli.QuantizingManyTensorsAndReadingThemBackHoldAFewTimesTheHeader 24
  MnistEndToEnd.OneEpochTrainsAndTwoBitsKeepTheAccuracy 22
  CheckpointStream.SkipPatternsMatchInPolynomialTimeAndDeepOnesAreRefused 22
  Atomicity.QuantizeKilledAtAnyMomentLeavesAWholeFile 21
  RandomHardCases.CodesAndTotalsOfHardCasesMatchTheReference 18
  Safetensors.AHeaderNoReaderWouldTakeIsNeverWritten 17
  QgemmGrouped.GroupsOfWholeRunsOfSixteenMatchTheRestoredWeights 14
  CliInspect.AHeaderOfManyTensorsIsListedWithoutHoldingItsRows 11
  Training.ResumesFromItsCheckpointExactly 11
  Cli.ALongSweepIsWrittenWithoutHoldingItsRows 10
)
while(nuq_long_cases)
  list(POP_FRONT nuq_long_cases nuq_case nuq_cost)
  set_tests_properties(${nuq_case} PROPERTIES COST ${nuq_cost})
endwhile()
