# TEST DOUBLE of torch_xla.utils.serialization: the TensorReference that xser files pickle in place of tensors.
class TensorReference:
    def __init__(self, tid):
        self.tid = tid
