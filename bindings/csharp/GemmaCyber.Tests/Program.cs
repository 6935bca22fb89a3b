using System;
using System.Collections.Generic;
using System.IO;
using System.Text;
using System.Threading;

namespace GemmaCyber.Tests
{
    /// <summary>The C# bindings' tests: each method proves what its name says. Run from the
    /// repository root (they read tests/golden and models/); exit code 0 means all passed.</summary>
    internal static class Program
    {
        private const int Dim = 768;

        private static int Main()
        {
            var tests = new List<KeyValuePair<string, Action>>
            {
                Test("VersionMatchesAbi", VersionMatchesAbi),
                Test("ClassifyMatchesGoldenVectors", ClassifyMatchesGoldenVectors),
                Test("LabelsFollowTheThreshold", LabelsFollowTheThreshold),
                Test("ModelDataLoadsLikeModelPath", ModelDataLoadsLikeModelPath),
                Test("ModelSha256PinsTheModel", ModelSha256PinsTheModel),
                Test("EmptyInputIsAnEmptyResult", EmptyInputIsAnEmptyResult),
                Test("BadClassifyCallsThrowTheirStatusAndWriteNothing", BadClassifyCallsThrowTheirStatusAndWriteNothing),
                Test("BadOptionsThrowTheirStatus", BadOptionsThrowTheirStatus),
                Test("DisposedClassifierRefusesCalls", DisposedClassifierRefusesCalls),
                Test("ConcurrentClassifyFromEightThreads", ConcurrentClassifyFromEightThreads),
                Test("DisposeDuringConcurrentClassifyIsSafe", DisposeDuringConcurrentClassifyIsSafe),
                Test("DisposeAndFinalizerReleaseEveryHandle", DisposeAndFinalizerReleaseEveryHandle),
                Test("DisposeDuringDeviceNameIsSafe", DisposeDuringDeviceNameIsSafe),
                Test("PluginChosenByNameMatchesTheGoldenVectors", PluginChosenByNameMatchesTheGoldenVectors),
                Test("PluginOptionsAreChecked", PluginOptionsAreChecked),
                Test("LogCallbackReceivesBackendStartedUntilTurnedOff", LogCallbackReceivesBackendStartedUntilTurnedOff),
                Test("LogCallbackReplacedReceivesNothingMore", LogCallbackReplacedReceivesNothingMore),
                Test("ThrowingLogCallbackDoesNotBreakCreate", ThrowingLogCallbackDoesNotBreakCreate),
                Test("AbortingLogCallbackDoesNotBreakCreate", AbortingLogCallbackDoesNotBreakCreate),
                Test("SetLogCallbackFromInsideTheCallbackIsRefused", SetLogCallbackFromInsideTheCallbackIsRefused),
            };
            int failed = 0;
            foreach (var test in tests)
            {
                try
                {
                    test.Value();
                    Console.WriteLine("ok   " + test.Key);
                }
                catch (Exception e)
                {
                    failed++;
                    Console.WriteLine("FAIL " + test.Key + ": " + e);
                }
            }
            Console.WriteLine(failed == 0 ? "all " + tests.Count + " passed" : failed + " of " + tests.Count + " FAILED");
            return failed == 0 ? 0 : 1;
        }

        private static KeyValuePair<string, Action> Test(string name, Action body)
        {
            return new KeyValuePair<string, Action>(name, body);
        }

        private static void Assert(bool condition, string what)
        {
            if (!condition)
            {
                throw new Exception("assertion failed: " + what);
            }
        }

        /// <summary>Runs <paramref name="body"/> and checks it throws a GemmaCyberException with
        /// <paramref name="want"/> and the library's message format.</summary>
        private static void Throws(Status want, string what, Action body, params string[] fragments)
        {
            try
            {
                body();
            }
            catch (GemmaCyberException e)
            {
                Assert(e.Status == want, what + ": status " + e.Status + " (" + e.Message + "), want " + want);
                Assert(e.Message.StartsWith("GEMMA_CYBER_STATUS_", StringComparison.Ordinal), what + ": message " + e.Message);
                foreach (string fragment in fragments)
                {
                    Assert(e.Message.Contains(fragment), what + ": message " + e.Message + " lacks " + fragment);
                }
                return;
            }
            throw new Exception(what + ": no exception, want " + want);
        }

        /// <summary>A little-endian float32 or float64 .npy file (numpy format 1.0) as doubles.</summary>
        private static double[] ReadNpy(string path)
        {
            byte[] data = File.ReadAllBytes(path);
            Assert(data.Length > 10 && data[1] == (byte)'N' && data[6] == 1, path + " is a version 1 .npy file");
            int headerLength = BitConverter.ToUInt16(data, 8);
            string header = Encoding.ASCII.GetString(data, 10, headerLength);
            int start = 10 + headerLength;
            int size = header.Contains("'<f4'") ? 4 : header.Contains("'<f8'") ? 8 : 0;
            Assert(size != 0, path + " holds float32 or float64");
            var values = new double[(data.Length - start) / size];
            for (int i = 0; i < values.Length; i++)
            {
                values[i] = size == 4 ? BitConverter.ToSingle(data, start + 4 * i) : BitConverter.ToDouble(data, start + 8 * i);
            }
            return values;
        }

        private static float[] GoldenInputs()
        {
            return Array.ConvertAll(ReadNpy("tests/golden/default.inputs.npy"), v => (float)v);
        }

        private static void VersionMatchesAbi()
        {
            Assert(Classifier.Version.Length > 0, "a version");
            Assert(Classifier.LibraryAbiVersion == Classifier.AbiVersion, "library ABI " + Classifier.LibraryAbiVersion);
        }

        private static void ClassifyMatchesGoldenVectors()
        {
            double[] expected = ReadNpy("tests/golden/default.expected.npy");
            using (var classifier = new Classifier())
            {
                Assert(classifier.InputDim == Dim, "input dim " + classifier.InputDim);
                Assert(classifier.Backend != Backend.Auto, "a concrete backend");
                Assert(classifier.DeviceName.Length > 0, "a device name");
                float[] got = classifier.Classify(GoldenInputs(), Dim);
                Assert(got.Length == expected.Length, got.Length + " probabilities");
                for (int i = 0; i < got.Length; i++)
                {
                    Assert(Math.Abs(got[i] - expected[i]) <= 1e-5, "row " + i + ": " + got[i] + ", golden " + expected[i]);
                }
            }
        }

        private static void LabelsFollowTheThreshold()
        {
            using (var classifier = new Classifier(new Options { Backend = Backend.Cpu, Threshold = 0.5f }))
            {
                Assert(classifier.Backend == Backend.Cpu, "cpu, as asked");
                float[] inputs = GoldenInputs();
                bool[] labels;
                float[] probabilities = classifier.Classify(inputs, Dim, out labels);
                var intoProbabilities = new float[probabilities.Length];
                var intoLabels = new byte[probabilities.Length];
                classifier.ClassifyInto(inputs, Dim, intoProbabilities, intoLabels);
                int cyber = 0;
                for (int i = 0; i < labels.Length; i++)
                {
                    Assert(labels[i] == (probabilities[i] >= 0.5f), "row " + i + " label");
                    Assert(intoLabels[i] == (intoProbabilities[i] >= 0.5f ? 1 : 0), "row " + i + " ClassifyInto label");
                    cyber += labels[i] ? 1 : 0;
                }
                Assert(cyber > 0 && cyber < labels.Length, "both labels among the golden rows");
                classifier.ClassifyInto(inputs, Dim, intoProbabilities, null);
            }
        }

        private static void ModelDataLoadsLikeModelPath()
        {
            float[] inputs = new float[4 * Dim];
            Array.Copy(GoldenInputs(), inputs, inputs.Length);
            using (var fromData = new Classifier(new Options { ModelData = File.ReadAllBytes("models/default.safetensors") }))
            using (var fromPath = new Classifier(new Options { ModelPath = "models/default.safetensors" }))
            {
                float[] a = fromData.Classify(inputs, Dim);
                float[] b = fromPath.Classify(inputs, Dim);
                for (int i = 0; i < a.Length; i++)
                {
                    Assert(Math.Abs(a[i] - b[i]) <= 1e-6, "row " + i);
                }
            }
        }

        private static void ModelSha256PinsTheModel()
        {
            byte[] data = File.ReadAllBytes("models/default.safetensors");
            byte[] sum;
            using (var sha = System.Security.Cryptography.SHA256.Create())
            {
                sum = sha.ComputeHash(data);
            }
            using (var pinned = new Classifier(new Options { ModelData = data, ModelSha256 = sum }))
            {
                Assert(pinned.InputDim == Dim, "input dim");
            }
            sum[0] ^= 1;
            Throws(Status.ModelInvalid, "wrong SHA-256", () => new Classifier(new Options { ModelData = data, ModelSha256 = sum }));
            Throws(Status.InvalidArgument, "short SHA-256", () => new Classifier(new Options { ModelSha256 = new byte[5] }));
        }

        private static void EmptyInputIsAnEmptyResult()
        {
            using (var classifier = new Classifier())
            {
                Assert(classifier.Classify(new float[0], Dim).Length == 0, "empty result");
                classifier.ClassifyInto(new float[0], Dim, new float[0], null);
            }
        }

        private static void BadClassifyCallsThrowTheirStatusAndWriteNothing()
        {
            using (var classifier = new Classifier())
            {
                var row = new float[Dim];
                row[0] = 1;
                var probabilities = new[] { -1f, -1f, -1f };
                var labels = new byte[] { 7, 7, 7 };
                Throws(Status.DimensionMismatch, "wrong dim", () => classifier.ClassifyInto(new float[2 * Dim], 512, probabilities, labels));
                foreach (float bad in new[] { float.NaN, float.PositiveInfinity, float.NegativeInfinity })
                {
                    var withBad = (float[])row.Clone();
                    withBad[3] = bad;
                    Throws(Status.NonFiniteInput, bad.ToString(), () => classifier.ClassifyInto(withBad, Dim, probabilities, labels));
                    Throws(Status.NonFiniteInput, bad + " (Classify)", () => classifier.Classify(withBad, Dim));
                }
                Assert(probabilities[0] == -1f && labels[0] == 7, "a failed call wrote nothing");
                Throws(Status.InvalidArgument, "null embeddings", () => classifier.Classify(null, Dim));
                Throws(Status.InvalidArgument, "dim 0", () => classifier.Classify(row, 0));
                Throws(Status.InvalidArgument, "partial row", () => classifier.Classify(new float[700], Dim));
                Throws(Status.InvalidArgument, "null probabilities", () => classifier.ClassifyInto(row, Dim, null, null));
                Throws(Status.InvalidArgument, "short labels", () => classifier.ClassifyInto(row, Dim, new float[1], new byte[0]));
                // The same array as input and probabilities: refused, and the input is unchanged.
                float[] shared = (float[])row.Clone();
                Throws(Status.InvalidArgument, "probabilities over the input", () => classifier.ClassifyInto(shared, Dim, shared, null));
                Assert(shared[0] == row[0], "probabilities over the input: the input was written");
            }
        }

        private static void BadOptionsThrowTheirStatus()
        {
            string junk = Path.GetTempFileName();
            try
            {
                File.WriteAllText(junk, "this is not a safetensors file");
                Throws(Status.ModelNotFound, "missing model", () => new Classifier(new Options { ModelPath = "/nonexistent/model.safetensors" }).Dispose());
                Throws(Status.ModelInvalid, "junk model file", () => new Classifier(new Options { ModelPath = junk }).Dispose());
                Throws(Status.ModelInvalid, "junk model data", () => new Classifier(new Options { ModelData = new byte[] { 1, 2, 3 } }).Dispose());
                Throws(Status.InvalidArgument, "unknown backend", () => new Classifier(new Options { Backend = (Backend)99 }).Dispose());
                Throws(Status.InvalidArgument, "threshold above 1", () => new Classifier(new Options { Threshold = 1.5f }).Dispose(),
                    "Threshold is 1.5; expected a number in [0, 1], or null for the model's own");
                // NaN is the C API's "the model's own": passed on, it was silently the default.
                Throws(Status.InvalidArgument, "NaN threshold", () => new Classifier(new Options { Backend = Backend.Cpu, Threshold = float.NaN }).Dispose(),
                    "Threshold is NaN");
                // Encoding.UTF8 wrote U+FFFD for a lone surrogate: a name the caller never gave.
                Throws(Status.InvalidArgument, "lone surrogate in ModelPath", () => new Classifier(new Options { Backend = Backend.Cpu, ModelPath = "a\uD800b.safetensors" }).Dispose(),
                    "ModelPath is not valid text");
                Throws(Status.InvalidArgument, "path and data", () => new Classifier(new Options { ModelPath = junk, ModelData = new byte[] { 1 } }).Dispose());
                Throws(Status.ModelInvalid, "empty model data", () => new Classifier(new Options { ModelData = new byte[0] }).Dispose());
                // The library would read a string only up to a NUL: the part before it names a
                // real model here, so only a refusal shows the NUL was not silently cut off.
                Throws(Status.InvalidArgument, "NUL in ModelPath", () => new Classifier(new Options { Backend = Backend.Cpu, ModelPath = "models/default.safetensors\0junk" }).Dispose(),
                    "ModelPath contains a NUL byte");
                Throws(Status.InvalidArgument, "NUL in OnnxRuntimeLibrary", () => new Classifier(new Options { Backend = Backend.Cpu, OnnxRuntimeLibrary = "libonnxruntime.so\0junk" }).Dispose(),
                    "OnnxRuntimeLibrary contains a NUL byte");
                Throws(Status.InvalidArgument, "NUL in PluginDir", () => new Classifier(new Options { Backend = Backend.Cpu, PluginDir = ".\0junk" }).Dispose(),
                    "PluginDir contains a NUL byte");
                Throws(Status.InvalidArgument, "NUL in PluginName", () => new Classifier(new Options { Backend = Backend.Plugin, PluginName = "example_c\0junk", PluginDir = ExamplePluginDir() }).Dispose(),
                    "PluginName contains a NUL byte");
                Throws(Status.InvalidArgument, "NUL in a plugin setting", () => new Classifier(new Options { Backend = Backend.Cpu, PluginSettings = new[] { "wgpu.adapter=x", "wgpu.adapter=y\0junk" } }).Dispose(),
                    "PluginSettings[1] contains a NUL byte");
            }
            finally
            {
                File.Delete(junk);
            }
        }

        /// <summary>The directory holding the plain-C example plugin, built by bindings/csharp/test.sh.</summary>
        private static string ExamplePluginDir()
        {
            string dir = Environment.GetEnvironmentVariable("GEMMA_CYBER_TEST_PLUGIN_DIR");
            Assert(!string.IsNullOrEmpty(dir), "GEMMA_CYBER_TEST_PLUGIN_DIR names the example plugin's directory (bindings/csharp/test.sh sets it)");
            return dir;
        }

        private static void PluginChosenByNameMatchesTheGoldenVectors()
        {
            double[] expected = ReadNpy("tests/golden/default.expected.npy");
            var options = new Options { Backend = Backend.Plugin, PluginName = "example_c", PluginDir = ExamplePluginDir() };
            using (var classifier = new Classifier(options))
            {
                Assert(classifier.Backend == Backend.Plugin, "backend " + classifier.Backend);
                Assert(classifier.DeviceName.StartsWith("example_c "), "device name " + classifier.DeviceName);
                float[] got = classifier.Classify(GoldenInputs(), Dim);
                for (int i = 0; i < got.Length; i++)
                {
                    Assert(Math.Abs(got[i] - expected[i]) <= 1e-5, "row " + i + ": " + got[i] + ", golden " + expected[i]);
                }
            }
        }

        private static void PluginOptionsAreChecked()
        {
            string dir = ExamplePluginDir();
            Throws(Status.InvalidArgument, "plugin without a name", () => new Classifier(new Options { Backend = Backend.Plugin }).Dispose());
            Throws(Status.InvalidArgument, "a setting the library owns", () => new Classifier(new Options { PluginSettings = new[] { "num_threads=2" } }).Dispose());
            Throws(Status.BackendUnavailable, "a plugin that is not there", () => new Classifier(new Options { Backend = Backend.Plugin, PluginName = "not_there", PluginDir = dir }).Dispose());
            Throws(Status.BackendUnavailable, "a setting the plugin does not know", () => new Classifier(new Options
            {
                Backend = Backend.Plugin,
                PluginName = "example_c",
                PluginDir = dir,
                PluginSettings = new[] { "example_c.colour=blue" },
            }).Dispose());
            // A null entry would be the NULL that ends the C array: the setting after it, which
            // the plugin refuses, would never be seen and the classifier would be created.
            Throws(Status.InvalidArgument, "a null setting", () => new Classifier(new Options
            {
                Backend = Backend.Plugin,
                PluginName = "example_c",
                PluginDir = dir,
                PluginSettings = new[] { null, "example_c.colour=blue" },
            }).Dispose(), "PluginSettings[0] is null");
        }

        /// <summary>Collects log messages from whatever thread the library calls on.</summary>
        private sealed class LogRecorder
        {
            private readonly List<KeyValuePair<LogLevel, string>> messages = new List<KeyValuePair<LogLevel, string>>();

            public void Record(LogLevel level, string message)
            {
                lock (messages)
                {
                    messages.Add(new KeyValuePair<LogLevel, string>(level, message));
                }
            }

            public List<KeyValuePair<LogLevel, string>> Messages
            {
                get
                {
                    lock (messages)
                    {
                        return new List<KeyValuePair<LogLevel, string>>(messages);
                    }
                }
            }

            public string Describe()
            {
                var lines = Messages.ConvertAll(m => m.Key + ": " + m.Value);
                return lines.Count + " messages [" + string.Join(" | ", lines) + "]";
            }
        }

        /// <summary>Registers a log callback, collects garbage (a delegate the bindings did not
        /// keep would be freed under the library), creates a cpu classifier and expects the Info
        /// message naming its device; after SetLogCallback(null) another create logs nothing.</summary>
        private static void LogCallbackReceivesBackendStartedUntilTurnedOff()
        {
            var log = new LogRecorder();
            try
            {
                Classifier.SetLogCallback(log.Record);
                GC.Collect();
                GC.WaitForPendingFinalizers();
                GC.Collect();
                string device;
                using (var classifier = new Classifier(new Options { Backend = Backend.Cpu }))
                {
                    device = classifier.DeviceName;
                }
                Assert(log.Messages.Exists(m => m.Key == LogLevel.Info && m.Value == "cpu backend started on " + device),
                    "an Info \"cpu backend started on " + device + "\" among " + log.Describe());
                Assert(log.Messages.TrueForAll(m => m.Value.Length > 0 && m.Value.IndexOf('\n') < 0), "one-line messages: " + log.Describe());
                Classifier.SetLogCallback(null);
                int before = log.Messages.Count;
                new Classifier(new Options { Backend = Backend.Cpu }).Dispose();
                new Classifier().Dispose();
                Assert(log.Messages.Count == before, "nothing after SetLogCallback(null): " + log.Describe());
            }
            finally
            {
                Classifier.SetLogCallback(null);
            }
        }

        /// <summary>Once SetLogCallback returns with a new callback, the old one gets nothing more,
        /// even while other threads create classifiers (and log) throughout.</summary>
        private static void LogCallbackReplacedReceivesNothingMore()
        {
            var first = new LogRecorder();
            var second = new LogRecorder();
            var errors = new List<string>();
            try
            {
                Classifier.SetLogCallback(first.Record);
                var stop = new ManualResetEventSlim(false);
                var threads = new List<Thread>();
                for (int t = 0; t < 4; t++)
                {
                    var thread = new Thread(() =>
                    {
                        try
                        {
                            while (!stop.IsSet)
                            {
                                new Classifier(new Options { Backend = Backend.Cpu }).Dispose();
                            }
                        }
                        catch (Exception e)
                        {
                            lock (errors)
                            {
                                errors.Add(e.Message);
                            }
                        }
                    });
                    threads.Add(thread);
                    thread.Start();
                }
                for (int i = 0; i < 200 && first.Messages.Count == 0; i++)
                {
                    Thread.Sleep(10);
                }
                Classifier.SetLogCallback(second.Record);
                int firstCount = first.Messages.Count;
                for (int i = 0; i < 200 && second.Messages.Count == 0; i++)
                {
                    Thread.Sleep(10);
                }
                stop.Set();
                foreach (var thread in threads)
                {
                    thread.Join();
                }
                Assert(errors.Count == 0, string.Join("; ", errors));
                Assert(firstCount > 0, "the first callback got messages from the creating threads");
                Assert(first.Messages.Count == firstCount, "the replaced callback got " + (first.Messages.Count - firstCount) + " messages after SetLogCallback returned");
                Assert(second.Messages.Exists(m => m.Key == LogLevel.Info && m.Value.StartsWith("cpu backend started on ", StringComparison.Ordinal)),
                    "the second callback got the creates' messages: " + second.Describe());
            }
            finally
            {
                Classifier.SetLogCallback(null);
            }
        }

        /// <summary>An exception from the callback is dropped by the bindings: it must not unwind
        /// into the library, and the create it logged from succeeds.</summary>
        private static void SetLogCallbackFromInsideTheCallbackIsRefused()
        {
            // Replacing the callback from inside it was refused by the library but not by the
            // binding, which then let go of the delegate the library still called.
            int calls = 0;
            Exception refused = null;
            try
            {
                Classifier.SetLogCallback((level, message) =>
                {
                    Interlocked.Increment(ref calls);
                    try
                    {
                        Classifier.SetLogCallback((l, m) => { });
                    }
                    catch (Exception e)
                    {
                        refused = e;
                    }
                });
                for (int i = 0; i < 3; i++)
                {
                    using (new Classifier(new Options { Backend = Backend.Cpu })) { }
                    GC.Collect();
                    GC.WaitForPendingFinalizers();
                }
                Assert(calls == 3, "the first callback kept every message (" + calls + ")");
                var status = (refused as GemmaCyberException)?.Status;
                Assert(status == Status.InvalidArgument, "SetLogCallback inside the callback threw InvalidArgument: " + refused);
            }
            finally
            {
                Classifier.SetLogCallback(null);
            }
        }

        private static void ThrowingLogCallbackDoesNotBreakCreate()
        {
            int calls = 0;
            try
            {
                Classifier.SetLogCallback((level, message) =>
                {
                    Interlocked.Increment(ref calls);
                    throw new InvalidOperationException("thrown by the log callback");
                });
                for (int i = 0; i < 3; i++)
                {
                    using (var classifier = new Classifier(new Options { Backend = Backend.Cpu }))
                    {
                        Assert(classifier.Backend == Backend.Cpu, "created on cpu");
                        Assert(classifier.Classify(new float[Dim], Dim).Length == 1, "and it classifies");
                    }
                }
                Assert(Volatile.Read(ref calls) >= 3, "the callback ran for each create: " + calls + " calls");
            }
            finally
            {
                Classifier.SetLogCallback(null);
            }
        }

        /// <summary>A callback that aborts its thread (Thread.Abort) is not let unwind into the
        /// library either: the bindings cancel the abort, the create it logged from returns, and
        /// the library's lock is released, so SetLogCallback(null) and another create complete.
        /// Every call into the library runs on a thread of its own, so that a lock left held fails
        /// the test instead of hanging it.</summary>
        private static void AbortingLogCallbackDoesNotBreakCreate()
        {
            int calls = 0;
            Exception failure = null;
            var body = new Thread(() =>
            {
                try
                {
                    Classifier.SetLogCallback((level, message) =>
                    {
                        Interlocked.Increment(ref calls);
                        Thread.CurrentThread.Abort();
                    });
                    // A new thread, so that an abort the bindings let through ends that one only.
                    Backend created = Backend.Auto;
                    var creator = new Thread(() =>
                    {
                        using (var classifier = new Classifier(new Options { Backend = Backend.Cpu }))
                        {
                            created = classifier.Backend;
                        }
                    }) { IsBackground = true };
                    creator.Start();
                    creator.Join();
                    Assert(Volatile.Read(ref calls) >= 1, "the callback ran");
                    Assert(created == Backend.Cpu, "the create whose callback aborted its thread returned a cpu classifier");
                    Classifier.SetLogCallback(null);
                    using (var classifier = new Classifier(new Options { Backend = Backend.Cpu }))
                    {
                        Assert(classifier.Classify(new float[Dim], Dim).Length == 1, "a later create classifies");
                    }
                }
                catch (Exception e)
                {
                    failure = e;
                }
                finally
                {
                    // Here rather than on the test's thread: it hangs if the lock was left held.
                    Classifier.SetLogCallback(null);
                }
            }) { IsBackground = true };
            body.Start();
            if (!body.Join(TimeSpan.FromSeconds(60)))
            {
                throw new Exception("not done after 60 s: the aborted callback left the library's lock held ("
                    + Volatile.Read(ref calls) + " calls" + (failure != null ? "; before that: " + failure.Message : "") + ")");
            }
            if (failure != null)
            {
                throw new Exception("failed: " + failure.Message, failure);
            }
        }

        private static void DisposedClassifierRefusesCalls()
        {
            var classifier = new Classifier();
            classifier.Dispose();
            classifier.Dispose(); // twice is fine
            try
            {
                classifier.Classify(new float[Dim], Dim);
                throw new Exception("Classify after Dispose succeeded");
            }
            catch (ObjectDisposedException)
            {
            }
        }

        /// <summary>Eight threads share one classifier; half their calls fail, so each also checks
        /// that the message it gets is its own call's (the library's last error is per thread).</summary>
        private static void ConcurrentClassifyFromEightThreads()
        {
            float[] inputs = GoldenInputs();
            var twoRowsAt512 = new float[2 * Dim];
            var wrongWidth = new float[3 * Dim];
            Array.Copy(inputs, twoRowsAt512, twoRowsAt512.Length);
            wrongWidth[1] = float.NaN;
            using (var classifier = new Classifier())
            {
                float[] want = classifier.Classify(inputs, Dim);
                var errors = new List<string>();
                var threads = new List<Thread>();
                for (int t = 0; t < 8; t++)
                {
                    int id = t;
                    var thread = new Thread(() =>
                    {
                        try
                        {
                            for (int i = 0; i < 20; i++)
                            {
                                if ((id + i) % 2 == 0)
                                {
                                    Throws(Status.DimensionMismatch, "thread wrong dim", () => classifier.Classify(twoRowsAt512, 512));
                                    Throws(Status.NonFiniteInput, "thread NaN", () => classifier.Classify(wrongWidth, Dim));
                                    continue;
                                }
                                float[] got = classifier.Classify(inputs, Dim);
                                for (int r = 0; r < got.Length; r++)
                                {
                                    // Not bit-exact: a backend may split work differently; cross-talk would be far off.
                                    Assert(Math.Abs(got[r] - want[r]) <= 1e-6, "thread result row " + r);
                                }
                            }
                        }
                        catch (Exception e)
                        {
                            lock (errors)
                            {
                                errors.Add(e.Message);
                            }
                        }
                    });
                    threads.Add(thread);
                    thread.Start();
                }
                foreach (var thread in threads)
                {
                    thread.Join();
                }
                Assert(errors.Count == 0, string.Join("; ", errors));
            }
        }

        /// <summary>Dispose waits for calls in flight (SafeHandle reference counting); calls after it
        /// throw ObjectDisposedException instead of using freed memory.</summary>
        private static void DisposeDuringConcurrentClassifyIsSafe()
        {
            float[] inputs = new float[8 * Dim];
            Array.Copy(GoldenInputs(), inputs, inputs.Length);
            var classifier = new Classifier();
            var errors = new List<string>();
            var threads = new List<Thread>();
            for (int t = 0; t < 8; t++)
            {
                var thread = new Thread(() =>
                {
                    for (int i = 0; i < 50; i++)
                    {
                        try
                        {
                            classifier.Classify(inputs, Dim);
                        }
                        catch (ObjectDisposedException)
                        {
                            return;
                        }
                        catch (Exception e)
                        {
                            lock (errors)
                            {
                                errors.Add(e.Message);
                            }
                            return;
                        }
                    }
                });
                threads.Add(thread);
                thread.Start();
            }
            Thread.Sleep(5);
            classifier.Dispose();
            foreach (var thread in threads)
            {
                thread.Join();
            }
            Assert(errors.Count == 0, string.Join("; ", errors));
        }

        /// <summary>DeviceName copies a string the classifier owns; a Dispose racing it must either
        /// wait for the copy or make it throw ObjectDisposedException, never let it read freed
        /// memory. A lost race shows as a value that is not the device name (or a crash); the
        /// right outcome is certain, only how often the race is hit varies.</summary>
        private static void DisposeDuringDeviceNameIsSafe()
        {
            string expected;
            using (var classifier = new Classifier(new Options { Backend = Backend.Cpu }))
            {
                expected = classifier.DeviceName;
            }
            Assert(expected.Length > 0, "the cpu backend has a device name");
            var wrong = new List<string>();
            for (int round = 0; round < 300; round++)
            {
                var classifier = new Classifier(new Options { Backend = Backend.Cpu });
                var start = new ManualResetEventSlim(false);
                var readers = new List<Thread>();
                for (int t = 0; t < 2; t++)
                {
                    var reader = new Thread(() =>
                    {
                        start.Wait();
                        try
                        {
                            while (true)
                            {
                                string name = classifier.DeviceName;
                                if (name != expected)
                                {
                                    lock (wrong)
                                    {
                                        wrong.Add(name);
                                    }
                                }
                            }
                        }
                        catch (ObjectDisposedException)
                        {
                        }
                    });
                    readers.Add(reader);
                    reader.Start();
                }
                start.Set();
                Thread.SpinWait(2000);
                classifier.Dispose();
                foreach (var reader in readers)
                {
                    reader.Join();
                }
            }
            Assert(wrong.Count == 0, wrong.Count + " DeviceName values were not \"" + expected + "\", e.g. \"" + (wrong.Count > 0 ? wrong[0] : "") + "\"");
        }

        private static void DisposeAndFinalizerReleaseEveryHandle()
        {
            int before = ClassifierHandle.LiveCount;
            new Classifier().Dispose();
            Assert(ClassifierHandle.LiveCount == before, "Dispose released its handle");
            // Made on a thread that then ends, so no stale stack slot keeps them reachable.
            var thread = new Thread(() =>
            {
                for (int i = 0; i < 4; i++)
                {
                    new Classifier().Classify(new float[Dim], Dim);
                }
            });
            thread.Start();
            thread.Join();
            Assert(ClassifierHandle.LiveCount == before + 4, "four undisposed classifiers alive");
            for (int tries = 0; tries < 50 && ClassifierHandle.LiveCount > before; tries++)
            {
                GC.Collect();
                GC.WaitForPendingFinalizers();
                Thread.Sleep(10);
            }
            Assert(ClassifierHandle.LiveCount == before, "the finalizer released them: " + ClassifierHandle.LiveCount + " live, " + before + " before");
        }
    }
}
