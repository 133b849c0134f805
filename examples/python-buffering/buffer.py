# Flink's BufferingSink (CheckpointedFunction) in Python: elements buffered in memory,
# flushed `threshold` at a time, and kept in operator list state at every checkpoint
# (weir's get_operator_list_state and snapshot_state), so a crash or a rescale loses and
# repeats nothing. The same job as examples/buffering, which is its Rust original.
from weir import ListStateDescriptor, ProcessFunction, Types, export


class Buffering(ProcessFunction):
    def open(self, runtime_context):
        self.threshold = int(runtime_context.get_job_parameter("threshold", "10"))
        self.checkpointed = runtime_context.get_operator_list_state(
            ListStateDescriptor("buffered-elements", Types.PICKLED_BYTE_ARRAY())
        )
        # Flink's initializeState: take the buffer back after a restore.
        self.buffer = list(self.checkpointed.get()) if runtime_context.is_restored() else []

    def process_element(self, value, ctx):
        self.buffer.append(value)
        if len(self.buffer) >= self.threshold:
            yield from self.buffer
            self.buffer = []

    def snapshot_state(self, checkpoint_id):
        self.checkpointed.update(self.buffer)

    def close(self):
        # The rest of the buffer when the input ends (weir emits what close yields).
        yield from self.buffer
        self.buffer = []


Handler = export(Buffering)
