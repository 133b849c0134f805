// Flink's way to change a running job's logic, measured as the peer of weir's live
// upgrade bench (`cargo bench -p weir-host --bench upgrade`): a keyed count (the
// generator of KeyedCountJson, ValueState<Long> per key) builds state for N keys; then
// stop-with-savepoint, and a new job (the same logic, the best case for an upgrade)
// restored from the savepoint. Prints the stop's time, the new job's time to its first
// output, and the sum: how long no element was processed. Both jobs run on a local
// MiniCluster in this JVM (the second includes starting it, as a redeploy would).
//
//   java -cp "classes:$FLINK_LIB/*" UpgradeRestart <keys> <hashmap|rocksdb> <savepoint dir>
import java.util.concurrent.atomic.AtomicLong;

import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.configuration.CheckpointingOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.StateBackendOptions;
import org.apache.flink.core.execution.JobClient;
import org.apache.flink.core.execution.SavepointFormatType;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;
import org.apache.flink.util.Collector;

public class UpgradeRestart {
  /** When the current job's first output was seen (ns), 0 before. */
  static final AtomicLong FIRST = new AtomicLong();
  /** Outputs seen by the current job. */
  static final AtomicLong SEEN = new AtomicLong();

  static long mix(long x) {
    x += 0x9e3779b97f4a7c15L;
    x = (x ^ (x >>> 30)) * 0xbf58476d1ce4e5b9L;
    x = (x ^ (x >>> 27)) * 0x94d049bb133111ebL;
    return x ^ (x >>> 31);
  }

  public static class Count extends KeyedProcessFunction<String, Tuple2<String, String>, String> {
    private transient ValueState<Long> count;
    @Override public void open(OpenContext ctx) {
      count = getRuntimeContext().getState(new ValueStateDescriptor<>("count", Types.LONG));
    }
    @Override public void processElement(Tuple2<String, String> v, Context ctx, Collector<String> out) throws Exception {
      Long c = count.value();
      long n = (c == null ? 0L : c) + 1L;
      count.update(n);
      out.collect("{\"key\":\"" + v.f0 + "\",\"count\":" + n + "}");
    }
  }

  static JobClient start(long keys, String backend, String dir, String restoreFrom) throws Exception {
    Configuration conf = new Configuration();
    conf.set(StateBackendOptions.STATE_BACKEND, backend);
    // Checkpoints and savepoints in files, as in production (the JobManager's memory
    // takes 5 MB at most).
    conf.set(CheckpointingOptions.CHECKPOINT_STORAGE, "filesystem");
    conf.set(CheckpointingOptions.CHECKPOINTS_DIRECTORY, dir + "/checkpoints");
    if (restoreFrom != null) {
      conf.setString("execution.state-recovery.path", restoreFrom);
    }
    StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment(conf);
    env.setParallelism(1);
    env.enableCheckpointing(10_000);
    final long k = keys;
    env.fromSequence(0, Long.MAX_VALUE).uid("events")
        .map(seq -> {
          long r = mix(1L ^ (seq * 0x9e3779b97f4a7c15L));
          String key = "key-" + Long.remainderUnsigned(r, k);
          String value = "{\"seq\":" + seq + ",\"key\":\"" + key + "\",\"value\":" + Long.remainderUnsigned(r >>> 32, 1000) + "}";
          return Tuple2.of(key, value);
        }).uid("parse").returns(Types.TUPLE(Types.STRING, Types.STRING))
        .keyBy(t -> t.f0)
        .process(new Count()).uid("count")
        .map(s -> {
          FIRST.compareAndSet(0, System.nanoTime());
          SEEN.incrementAndGet();
          return s;
        }).uid("first")
        .sinkTo(new DiscardingSink<>()).uid("sink");
    FIRST.set(0);
    SEEN.set(0);
    return env.executeAsync("upgrade-peer");
  }

  public static void main(String[] args) throws Exception {
    long keys = Long.parseLong(args[0]);
    String backend = args[1];
    String dir = args[2];
    JobClient first = start(keys, backend, dir, null);
    // State for (nearly) every key: events until four per key on average.
    while (SEEN.get() < keys * 4) {
      Thread.sleep(100);
    }
    long t0 = System.nanoTime();
    String savepoint = first.stopWithSavepoint(false, dir + "/savepoints", SavepointFormatType.CANONICAL).get();
    long t1 = System.nanoTime();
    JobClient second = start(keys, backend, dir, savepoint);
    while (FIRST.get() == 0) {
      Thread.sleep(1);
    }
    long t2 = FIRST.get();
    second.cancel().get();
    System.out.printf("flink upgrade-peer keys=%d backend=%s: stop with savepoint %.0f ms, restore to first output %.0f ms, no output for %.0f ms%n",
        keys, backend, (t1 - t0) / 1e6, (t2 - t1) / 1e6, (t2 - t0) / 1e6);
    System.exit(0);
  }
}
