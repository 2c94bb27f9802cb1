"""GlanceSeg: gaze-guided microaneurysm segmentation for diabetic-retinopathy screening stations."""
